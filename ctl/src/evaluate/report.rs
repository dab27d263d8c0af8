//! Output of `evaluate`: a block and a summary table for people, one JSON object for scripts.

use serde_json::{json, Value};

use super::score::{Alignment, Score};
use super::{FileOutcome, FileScore, Report};
use crate::table::{Align, Table};

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

fn seconds(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.3} s"))
}

fn confusion_table(s: &Score) -> String {
    let mut cols: Vec<(&str, Align)> = vec![("TRUE\\DECODED", Align::Left)];
    cols.extend(s.columns.iter().map(|c| (c.as_str(), Align::Right)));
    let mut t = Table::new(&cols).indent(2);
    for (class, row) in s.classes.iter().zip(&s.matrix) {
        let mut cells = vec![class.clone()];
        cells.extend(row.iter().map(u64::to_string));
        t.row(cells);
    }
    t.render()
}

fn itr_line(s: &Score) -> String {
    format!(
        "mean decision time {}; ITR {} bits/min (T = mean decision time), {} bits/min (T = trial length {})",
        seconds(s.mean_decision_time),
        num(s.itr_bits_per_min, 2),
        num(s.itr_trial_bits_per_min, 2),
        seconds(s.mean_trial_length),
    )
}

/// The human block of one file, printed as soon as the file is done.
pub fn file_block(f: &FileOutcome) -> String {
    match &f.result {
        Err(e) => format!("{}: failed: {}\n\n", f.file, super::bare_message(f, e)),
        Ok(fs) => {
            let s = &fs.score;
            let mut out = format!(
                "{}: session {}, {} trials ({} decided), accuracy {} ({}/{}), {} tokens\n",
                f.file,
                fs.session,
                s.trials,
                s.decided,
                num(s.accuracy, 3),
                s.correct,
                s.trials,
                fs.tokens
            );
            out.push_str(&format!("  {}\n", itr_line(s)));
            out.push_str(&confusion_table(s));
            for n in &fs.notes {
                out.push_str(&format!("  note: {n}\n"));
            }
            out.push('\n');
            out
        }
    }
}

/// The summary table (one row per file and the pooled row) and the overall lines.
pub fn summary(r: &Report) -> String {
    let mut t = Table::new(&[
        ("FILE", Align::Left),
        ("TRIALS", Align::Right),
        ("DECIDED", Align::Right),
        ("ACCURACY", Align::Right),
        ("DECISION", Align::Right),
        ("ITR/MIN", Align::Right),
        ("ITR/MIN@TRIAL", Align::Right),
    ]);
    let row = |name: &str, s: &Score| {
        vec![
            name.to_string(),
            s.trials.to_string(),
            s.decided.to_string(),
            num(s.accuracy, 3),
            seconds(s.mean_decision_time),
            num(s.itr_bits_per_min, 2),
            num(s.itr_trial_bits_per_min, 2),
        ]
    };
    for f in &r.files {
        match &f.result {
            Ok(fs) => t.row(row(&f.file, &fs.score)),
            Err(_) => t.row(vec![f.file.clone(), "failed".into()]),
        }
    }
    t.row(row("pooled", &r.overall));
    let ok = r.files.iter().filter(|f| f.result.is_ok()).count();
    let failed = r.files.len() - ok;
    let mut out = t.render();
    out.push_str(&format!(
        "\nOverall ({ok} file(s) scored{}): pooled accuracy {} ({}/{} trials), mean of file accuracies {}\n",
        if failed > 0 { format!(", {failed} failed") } else { String::new() },
        num(r.overall.accuracy, 3),
        r.overall.correct,
        r.overall.trials,
        num(r.mean_file_accuracy, 3),
    ));
    out.push_str(&format!("  {}\n", itr_line(&r.overall)));
    out.push_str(&format!(
        "  Model {}, {} classes ({}), decision by the {} token in a trial. ITR is Wolpaw's, with T = the mean \
         decision time (token t − trial start) unless said otherwise.\n",
        r.model,
        r.alignment.classes.len(),
        r.alignment.classes.join(", "),
        r.alignment.decision.as_str(),
    ));
    if r.alignment.token_delay > 0.0 {
        out.push_str(&format!(
            "  Tokens count from {} s after the trial start (only windows wholly in the trial; --partial-windows counts the others).\n",
            r.alignment.token_delay
        ));
    }
    for n in &r.notes {
        out.push_str(&format!("  note: {n}\n"));
    }
    out
}

fn confusion_json(s: &Score) -> Value {
    json!({"labels": s.classes, "columns": s.columns, "matrix": s.matrix})
}

fn score_fields(s: &Score) -> serde_json::Map<String, Value> {
    let v = json!({
        "trials": s.trials,
        "decided": s.decided,
        "correct": s.correct,
        "accuracy": s.accuracy,
        "mean_decision_time": s.mean_decision_time,
        "mean_trial_length": s.mean_trial_length,
        "bits_per_trial": s.bits_per_trial,
        "itr_bits_per_min": s.itr_bits_per_min,
        "itr_trial_bits_per_min": s.itr_trial_bits_per_min,
        "confusion": confusion_json(s),
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!("an object"),
    }
}

fn file_json(f: &FileOutcome) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("file".into(), json!(f.file));
    match &f.result {
        Err(e) => {
            m.insert("error".into(), json!({"code": e.code(), "message": e.message}));
        }
        Ok(FileScore { session, tokens, score, notes, .. }) => {
            m.insert("session".into(), json!(session));
            m.extend(score_fields(score));
            m.insert("tokens".into(), json!(tokens));
            m.insert("notes".into(), json!(notes));
        }
    }
    Value::Object(m)
}

/// `{"model":…,"alignment":{…},"files":[…],"overall":{…}}`.
pub fn json(r: &Report) -> Value {
    let mut overall = score_fields(&r.overall);
    overall.insert("mean_file_accuracy".into(), json!(r.mean_file_accuracy));
    overall.insert("files".into(), json!(r.files.iter().filter(|f| f.result.is_ok()).count()));
    overall.insert("failed_files".into(), json!(r.files.iter().filter(|f| f.result.is_err()).count()));
    overall.insert("itr_time".into(), json!("mean_decision_time"));
    overall.insert("notes".into(), json!(r.notes));
    json!({
        "model": r.model,
        "alignment": alignment_json(&r.alignment),
        "files": r.files.iter().map(file_json).collect::<Vec<_>>(),
        "overall": Value::Object(overall),
    })
}

fn alignment_json(a: &Alignment) -> Value {
    json!({
        "classes": a.classes,
        "labels": a.classes.iter().map(|c| a.label_of(c)).collect::<Vec<_>>(),
        "trial_start": a.trial_start,
        "trial_length": a.trial_length,
        "decision": a.decision.as_str(),
        "token_delay": a.token_delay,
    })
}
