//! `compare`: earlier runs' JSON lines side by side, one file per side, as medians and as
//! ratios to the first side. Machines here are noisy, so a before/after claim is made from
//! runs that alternated in one session (`scripts/bench-compare.sh`), never from two
//! sessions' absolute figures.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Every figure of one scenario on one side, in report order: field, one value per run.
type Figures = Vec<(String, Vec<f64>)>;

/// One side: its label, and per scenario (in order of appearance) its runs.
struct Side {
    label: String,
    scenarios: Vec<(String, Scenario)>,
}

#[derive(Default)]
struct Scenario {
    runs: usize,
    failed: usize,
    figures: Figures,
}

/// The value under `key` in a small list kept in order of appearance.
fn get<'a, T>(list: &'a [(String, T)], key: &str) -> Option<&'a T> {
    list.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// The value under `key`, appended (default) if it is not there yet.
fn entry<'a, T: Default>(list: &'a mut Vec<(String, T)>, key: &str) -> &'a mut T {
    let i = match list.iter().position(|(k, _)| k == key) {
        Some(i) => i,
        None => {
            list.push((key.to_string(), T::default()));
            list.len() - 1
        }
    };
    &mut list[i].1
}

/// Keys in order of first appearance, each once.
fn unique<'a>(keys: impl Iterator<Item = &'a String>) -> Vec<&'a String> {
    let mut out: Vec<&String> = Vec::new();
    for key in keys {
        if !out.contains(&key) {
            out.push(key);
        }
    }
    out
}

/// Prints the comparison of `files` and returns the exit code: 1 if any run of any side
/// reported a failed correctness check (its figures are not to be trusted), else 0.
pub fn run(files: &[PathBuf]) -> Result<i32, String> {
    let sides = files
        .iter()
        .map(|f| load(f))
        .collect::<Result<Vec<_>, _>>()?;
    let (text, failed) = render(&sides);
    print!("{text}");
    Ok(i32::from(failed))
}

fn load(path: &Path) -> Result<Side, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let label = path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into(),
    );
    Ok(parse(label, &text))
}

/// Reads the report lines (JSON objects with a `scenario`); anything else is skipped.
fn parse(label: String, text: &str) -> Side {
    let mut scenarios: Vec<(String, Scenario)> = Vec::new();
    for line in text.lines() {
        let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(name) = obj.get("scenario").and_then(Value::as_str) else {
            continue;
        };
        let s = entry(&mut scenarios, name);
        s.runs += 1;
        if obj.get("ok") != Some(&Value::Bool(true)) {
            s.failed += 1;
        }
        for (key, v) in &obj {
            match v {
                Value::Number(n) => push(&mut s.figures, key, n.as_f64()),
                // Percentile objects: one level down (`latency_ms.p99_ms`).
                Value::Object(inner) => {
                    for (sub, v) in inner {
                        push(&mut s.figures, &format!("{key}.{sub}"), v.as_f64());
                    }
                }
                _ => {}
            }
        }
    }
    Side { label, scenarios }
}

fn push(figures: &mut Figures, key: &str, v: Option<f64>) {
    if let Some(v) = v.filter(|v| v.is_finite()) {
        entry(figures, key).push(v);
    }
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn show(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.1}"),
        Some(v) if v.abs() >= 1.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.3}"),
    }
}

/// The comparison as text, and whether any run failed its checks. Fields whose value is
/// the same in every run of every side (the run's parameters) are left out, once there
/// are at least two runs to tell them from figures.
fn render(sides: &[Side]) -> (String, bool) {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut failed = false;
    let Some(first) = sides.first() else {
        return (out, false);
    };
    let names = unique(sides.iter().flat_map(|s| &s.scenarios).map(|(n, _)| n));
    for name in names {
        let per_side: Vec<Option<&Scenario>> =
            sides.iter().map(|s| get(&s.scenarios, name)).collect();
        let runs: Vec<String> = per_side
            .iter()
            .map(|s| s.map_or(0, |s| s.runs).to_string())
            .collect();
        let _ = writeln!(out, "== {name} (runs: {})", runs.join(" / "));
        for (side, s) in sides.iter().zip(&per_side) {
            if let Some(s) = s
                && s.failed > 0
            {
                failed = true;
                let _ = writeln!(
                    out,
                    "!! {}: {} run(s) failed their checks",
                    side.label, s.failed
                );
            }
        }
        let mut fields = unique(
            per_side
                .iter()
                .flatten()
                .flat_map(|s| &s.figures)
                .map(|(f, _)| f),
        );
        let total_runs: usize = per_side.iter().flatten().map(|s| s.runs).sum();
        fields.retain(|f| {
            if total_runs < 2 {
                return true;
            }
            let mut all = per_side
                .iter()
                .flatten()
                .filter_map(|s| get(&s.figures, f))
                .flatten();
            let first = all.next();
            all.any(|v| Some(v) != first)
        });
        let width = fields.iter().map(|f| f.len()).max().unwrap_or(5).max(5);
        let mut header = format!("{:width$}", "field");
        for (i, side) in sides.iter().enumerate() {
            let _ = write!(header, "  {:>12}", truncate(&side.label, 12));
            if i > 0 {
                let _ = write!(header, "  {:>8}", format!("/{}", truncate(&first.label, 7)));
            }
        }
        let _ = writeln!(out, "{header}");
        for field in fields {
            let medians: Vec<Option<f64>> = per_side
                .iter()
                .map(|s| {
                    s.and_then(|s| get(&s.figures, field))
                        .and_then(|v| median(v))
                })
                .collect();
            let mut row = format!("{field:width$}");
            for (i, m) in medians.iter().enumerate() {
                let _ = write!(row, "  {:>12}", show(*m));
                if i > 0 {
                    let ratio = match (medians[0], *m) {
                        (Some(a), Some(b)) if a != 0.0 => format!("{:.2}", b / a),
                        _ => "-".into(),
                    };
                    let _ = write!(row, "  {ratio:>8}");
                }
            }
            let _ = writeln!(out, "{row}");
        }
        out.push('\n');
    }
    (out, failed)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_ratios_and_parameters_left_out() {
        let a = parse(
            "before".into(),
            r#"noise that is not JSON
{"scenario":"fanout","ok":true,"clients":100,"last_delivery_ms":10.0,"lat":{"p99_ms":1.0}}
{"scenario":"fanout","ok":true,"clients":100,"last_delivery_ms":30.0,"lat":{"p99_ms":3.0}}
{"scenario":"fanout","ok":true,"clients":100,"last_delivery_ms":20.0,"lat":{"p99_ms":2.0}}"#,
        );
        let b = parse(
            "after".into(),
            r#"{"scenario":"fanout","ok":true,"clients":100,"last_delivery_ms":5.0,"lat":{"p99_ms":1.0}}
{"scenario":"fanout","ok":true,"clients":100,"last_delivery_ms":15.0,"lat":{"p99_ms":3.0}}
{"scenario":"churn","ok":false,"server_cpu_us_per_push":40}"#,
        );
        let (text, failed) = render(&[a, b]);
        assert!(failed, "a failed run must fail the comparison:\n{text}");
        assert!(text.contains("== fanout (runs: 3 / 2)"), "{text}");
        // Median 20 before, 10 after (mean of two): ratio 0.50.
        let row = text
            .lines()
            .find(|l| l.starts_with("last_delivery_ms"))
            .unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols,
            ["last_delivery_ms", "20.00", "10.00", "0.50"],
            "{text}"
        );
        let row = text.lines().find(|l| l.starts_with("lat.p99_ms")).unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            ["lat.p99_ms", "2.00", "2.00", "1.00"]
        );
        assert!(
            !text.contains("clients"),
            "parameters are not figures:\n{text}"
        );
        assert!(text.contains("== churn (runs: 0 / 1)"), "{text}");
        assert!(text.contains("!! after: 1 run(s) failed"), "{text}");
        // A single run: nothing to tell parameters from figures, so everything is shown.
        assert!(text.contains("server_cpu_us_per_push"), "{text}");
    }
}
