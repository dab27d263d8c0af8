"""Spell with bci2tokend over D-Bus: subscribe to a session and turn its TokenDecoded signals into
text, keeping the logit bias an LLM's next request would take (docs/dbus.md).

    python3 docs/examples/dbus_speller.py [--bus ADDRESS] SESSION_PATH

SESSION_PATH is a session's object, /org/bci2token/session/<id> (StartSession returns it; `busctl
tree org.bci2token.Daemon1` lists them). The default bus is the system bus; `--bus session` for a
`bci2tokend --user`. Needs jeepney (`pip install jeepney`). Prints the text after every token, and
at the end one JSON line: {"text": ..., "logit_bias": {token id: bias}}.
"""

import argparse
import json

from jeepney import DBusAddress, MatchRule, MessageType, new_method_call
from jeepney.io.blocking import open_dbus_connection


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bus", default="SYSTEM", help="system (default), session, or a D-Bus address")
    ap.add_argument("session", help="the session's object path")
    args = ap.parse_args()
    bus = {"system": "SYSTEM", "session": "SESSION"}.get(args.bus.lower(), args.bus)

    conn = open_dbus_connection(bus=bus)
    session = DBusAddress(args.session, bus_name="org.bci2token.Daemon1", interface="org.bci2token.Session1")
    # The daemon sends a session's signals only to the callers that subscribed (its owner or an
    # admin), addressed to them: catch them with a filter before subscribing.
    signals = conn.filter(MatchRule(type="signal", interface="org.bci2token.Session1", path=args.session),
                          bufsize=10_000).queue
    reply = conn.send_and_get_reply(new_method_call(session, "Subscribe"), timeout=30)
    if reply.header.message_type == MessageType.error:
        raise SystemExit(f"Subscribe: {reply.header.fields.get(4)}: {reply.body[0] if reply.body else ''}")

    text, logit_bias = "", {}
    while True:
        msg = conn.recv_until_filtered(signals)
        member = msg.header.fields.get(3)
        if member == "TokenDecoded":
            label, token_text, token_ids, probability, bias, stream_time, latency = msg.body
            text += token_text
            # An LLM request would take this as its next-token bias, e.g. OpenAI-style
            # {"logit_bias": {"71": 3.7, ...}} for the model's tokenizer (gpt2 for speller-40).
            logit_bias = {str(token_id): round(b, 3) for token_id, b in bias.items()}
            print(f"{text!r}  (+{label!r} p={probability:.2f} ids={list(token_ids)} at {stream_time:.2f} s, "
                  f"{latency * 1e3:.1f} ms)", flush=True)
        elif member == "StateChanged" and msg.body[0] in ("stopped", "finished", "failed"):
            break
    print(json.dumps({"text": text, "logit_bias": logit_bias}), flush=True)


if __name__ == "__main__":
    main()
