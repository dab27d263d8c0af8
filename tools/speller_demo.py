"""Helpers for tools/demo's speller: the synthetic board's script for a phrase, and a live view of
the token events bci2tokenctl prints with --json.

  speller_demo.py script MODEL_DIR PHRASE   prints the JSON script that makes the simulated user
                                            look at each letter's target in turn
  speller_demo.py show                      reads `--json --follow` lines on stdin, prints tokens
"""
import json
import sys
import tomllib


def script(model_dir: str, phrase: str) -> None:
    with open(f"{model_dir}/model.toml", "rb") as f:
        manifest = tomllib.load(f)
    speller = manifest["speller"]
    labels = {text: label for label, text in manifest["tokens"]["text"].items()}
    items = [{"label": "rest", "seconds": 2.0}]
    for ch in phrase:
        label = labels.get(ch)
        if label is None:
            sys.exit(f"speller_demo: the speller has no target for {ch!r}")
        items.append({"label": label, "frequency": speller["frequencies"][label], "seconds": speller["dwell_seconds"]})
        items.append({"label": "rest", "seconds": speller["gap_seconds"]})
    print(json.dumps(items))


def show() -> None:
    text = ""
    for line in sys.stdin:
        event = json.loads(line)
        kind = event.get("type")
        if kind == "token":
            text += event["text"]
            print(
                f"  t={event['t']:7.2f}s  {event['label']!r:>5}  {event['confidence'] * 100:3.0f}%  "
                f"{event['latency_us'] / 1000:5.2f} ms   {text}",
                flush=True,
            )
        elif kind == "decoder_error":
            print(f"  decoder error: {event['message']}", flush=True)
        elif kind == "state" and event["state"] in ("stopped", "finished", "failed"):
            print(f"session {event['state']}; decoded text: {text!r}", flush=True)
        elif "id" in event and "type" not in event:
            print(f"session {event['id']}: {event['description']}, model {event['model']}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["script"]:
        script(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["show"]:
        show()
    else:
        sys.exit(__doc__)
