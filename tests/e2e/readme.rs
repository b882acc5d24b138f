//! The README, replayed top to bottom on one fresh database: every `$ buf curl …` and
//! `$ patron …` command in its `sh` blocks runs, in order, against a real server started here,
//! and what it prints must match the output the README shows under it. The test fails when the
//! README and the server drift apart.
//!
//! How the README's outputs are read (the README says the same under "Talking to it"):
//! - A block right after a line starting `<!-- not replayed` is skipped (the demo's data set), and
//!   so are the sections in [`OTHER_SET_UPS`], whose examples need credentials or replicas.
//! - JSON output is a pattern: `...` in an object or at the end of an array stands for whatever
//!   the README leaves out; everything shown must be there with that value, and an object
//!   without `...` must have no other fields. Fields in [`VARYING`] (times of recording, generated
//!   ids, page tokens) only need to be present.
//! - Plain-text output must match line for line, except `took … s`.
//! - The walkthrough is written as on [`README_DAY`]; the replay moves every `YYYY-MM-DD` in
//!   commands and outputs by the days from then to today, so points still pending, tenure and
//!   other day counts read as the README shows. The example data set `patron import` loads
//!   moves too, by the days since [`EXAMPLES_DAY`], when the outputs reading it were recorded.
//! - `buf curl …` abbreviates `buf curl --protocol grpc --http2-prior-knowledge`.
//!
//! `buf` comes from `npm ci` (node_modules/.bin/buf) or `PATRON_BUF`; without it the test fails
//! and says so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use patron_domain::Date;

use patron_server::{Application, Settings};
use tokio::sync::oneshot;

use crate::support::{Backend, connect, fresh_database};

/// The day the README's walkthrough is written as of.
const README_DAY: (i32, i32, i32) = (2026, 11, 23);

/// The day the outputs that read the example data set (`examples/*.csv`, loaded by `patron
/// import`) were recorded: the replay loads copies whose dates move by the days from then to
/// today, so the data are as old as they were then and a fit on them gives the same numbers.
const EXAMPLES_DAY: (i32, i32, i32) = (2026, 12, 5);

/// Sections whose examples need another set-up than one plain server.
const OTHER_SET_UPS: &[&str] = &[
    "## Authentication and TLS",
    "## Replicas and consistency",
    "## Operations",
];

/// JSON fields whose values differ on every run: only their presence is checked.
const VARYING: &[&str] = &[
    "recordTime",
    "createTime",
    "updateTime",
    "enrollTime",
    "observeTime",
    "redeemTime",
    "fitTime",
    "evaluateTime",
    "asOf",
    "redemptionId",
    "nextPageToken",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn buf_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PATRON_BUF") {
        return PathBuf::from(p);
    }
    let p = repo_root().join("node_modules/.bin/buf");
    assert!(
        p.exists(),
        "the README replay needs buf: run `npm ci` in the repository (it installs \
         node_modules/.bin/buf) or set PATRON_BUF to a buf binary"
    );
    p
}

/// One command of the README and the output it shows.
#[derive(Debug)]
struct Step {
    line: usize,
    command: String,
    output: String,
}

/// The replayed commands of the README, in order.
fn steps(readme: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut skip_next = false;
    let mut in_block: Option<bool> = None; // Some(replayed)
    let mut current: Option<Step> = None;
    let mut open_quote = false;
    let mut continuing = false;
    let mut other_set_up = false;
    for (i, line) in readme.lines().enumerate() {
        match in_block {
            None => {
                if line.starts_with("## ") {
                    other_set_up = OTHER_SET_UPS.contains(&line.trim_end());
                }
                if line.trim_start().starts_with("<!-- not replayed") {
                    skip_next = true;
                } else if line.starts_with("```sh") {
                    in_block = Some(!skip_next && !other_set_up);
                    skip_next = false;
                }
            }
            Some(replayed) => {
                if line.starts_with("```") {
                    in_block = None;
                    steps.extend(current.take());
                    continue;
                }
                if !replayed {
                    continue;
                }
                if continuing || open_quote {
                    let step = current.as_mut().expect("a command continues");
                    step.command.push('\n');
                    step.command.push_str(line);
                } else if let Some(cmd) = line.strip_prefix("$ ") {
                    steps.extend(current.take());
                    current = Some(Step {
                        line: i + 1,
                        command: cmd.to_owned(),
                        output: String::new(),
                    });
                } else if let Some(step) = current.as_mut() {
                    step.output.push_str(line);
                    step.output.push('\n');
                    continue;
                } else {
                    continue;
                }
                if line.matches('\'').count() % 2 == 1 {
                    open_quote = !open_quote;
                }
                continuing = !open_quote && line.ends_with('\\');
            }
        }
    }
    steps
}

/// Moves every `YYYY-MM-DD` in `text` by `days`.
fn shift_dates(text: &str, days: i32) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let shape = |j: usize| {
            j + 10 <= bytes.len()
                && bytes[j..j + 10].iter().enumerate().all(|(k, b)| match k {
                    4 | 7 => *b == b'-',
                    _ => b.is_ascii_digit(),
                })
                && (j + 10 == bytes.len() || !bytes[j + 10].is_ascii_digit())
                && (j == 0 || !bytes[j - 1].is_ascii_digit())
        };
        if text.is_char_boundary(i)
            && shape(i)
            && let Ok(date) = Date::parse_iso(&text[i..i + 10])
        {
            let day = date.to_day().as_days() + days;
            let moved = patron_domain::Day::from_days(day).date();
            out.push_str(&moved.to_string());
            i += 10;
            continue;
        }
        let c = text[i..].chars().next().expect("a char");
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// A JSON value from the README with `...` for what it leaves out.
#[derive(Debug)]
enum Pat {
    Obj(Vec<(String, Pat)>, bool),
    Arr(Vec<Pat>, bool),
    Val(serde_json::Value),
}

struct Parser<'a> {
    s: &'a str,
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.s[self.i..].starts_with(|c: char| c.is_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, t: &str) -> bool {
        self.ws();
        if self.s[self.i..].starts_with(t) {
            self.i += t.len();
            true
        } else {
            false
        }
    }

    fn fail(&self, what: &str) -> ! {
        panic!("README output: {what} at {:?}", &self.s[self.i..])
    }

    fn string(&mut self) -> String {
        self.ws();
        let rest = &self.s[self.i..];
        let mut escaped = false;
        for (k, c) in rest.char_indices().skip(1) {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    self.i += k + 1;
                    return serde_json::from_str(&rest[..=k]).expect("a JSON string");
                }
                _ => {}
            }
        }
        self.fail("unterminated string")
    }

    fn value(&mut self) -> Pat {
        self.ws();
        if self.eat("{") {
            let mut fields = Vec::new();
            let mut open = false;
            loop {
                if self.eat("}") {
                    return Pat::Obj(fields, open);
                }
                if self.eat("...") {
                    open = true;
                } else {
                    let key = self.string();
                    if !self.eat(":") {
                        self.fail("expected :");
                    }
                    fields.push((key, self.value()));
                }
                if !self.eat(",") && !self.s[self.i..].trim_start().starts_with('}') {
                    self.fail("expected , or }");
                }
            }
        }
        if self.eat("[") {
            let mut items = Vec::new();
            let mut open = false;
            loop {
                if self.eat("]") {
                    return Pat::Arr(items, open);
                }
                if self.eat("...") {
                    open = true;
                } else {
                    items.push(self.value());
                }
                if !self.eat(",") && !self.s[self.i..].trim_start().starts_with(']') {
                    self.fail("expected , or ]");
                }
            }
        }
        if self.s[self.i..].starts_with('"') {
            return Pat::Val(serde_json::Value::String(self.string()));
        }
        let len = self.s[self.i..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c)))
            .unwrap_or(self.s.len() - self.i);
        let token = &self.s[self.i..self.i + len];
        self.i += len;
        Pat::Val(serde_json::from_str(token).unwrap_or_else(|_| self.fail("not a JSON value")))
    }
}

fn parse_pattern(s: &str) -> Pat {
    let mut p = Parser { s, i: 0 };
    let v = p.value();
    p.ws();
    assert!(
        p.i == s.len(),
        "README output: trailing text {:?}",
        &s[p.i..]
    );
    v
}

/// Where `actual` differs from `pat`, as a path and a reason.
fn mismatch(pat: &Pat, actual: &serde_json::Value, path: &str) -> Option<String> {
    match pat {
        Pat::Val(v) => (v != actual).then(|| format!("{path}: README {v}, server {actual}")),
        Pat::Obj(fields, open) => {
            let Some(obj) = actual.as_object() else {
                return Some(format!("{path}: README an object, server {actual}"));
            };
            for (key, p) in fields {
                let here = format!("{path}.{key}");
                let Some(a) = obj.get(key) else {
                    return Some(format!("{here}: missing from the server's answer"));
                };
                if VARYING.contains(&key.as_str()) {
                    continue;
                }
                if let Some(m) = mismatch(p, a, &here) {
                    return Some(m);
                }
            }
            if !open {
                let extra: Vec<&String> = obj
                    .keys()
                    .filter(|k| !fields.iter().any(|(f, _)| f == *k))
                    .collect();
                if !extra.is_empty() {
                    return Some(format!("{path}: the server also answers {extra:?}"));
                }
            }
            None
        }
        Pat::Arr(items, open) => {
            let Some(arr) = actual.as_array() else {
                return Some(format!("{path}: README an array, server {actual}"));
            };
            if arr.len() < items.len() || (!open && arr.len() != items.len()) {
                return Some(format!(
                    "{path}: README {} items, server {}",
                    items.len(),
                    arr.len()
                ));
            }
            items
                .iter()
                .zip(arr)
                .enumerate()
                .find_map(|(k, (p, a))| mismatch(p, a, &format!("{path}[{k}]")))
        }
    }
}

fn compare(step: &Step, expected: &str, stdout: &str, stderr: &str, success: bool) {
    let expected = expected.trim();
    let here = format!("README line {}: `{}`", step.line, step.command);
    if expected.is_empty() {
        assert!(success, "{here} failed:\n{stdout}\n{stderr}");
        return;
    }
    let actual = if success { stdout } else { stderr };
    if expected.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(actual)
            .unwrap_or_else(|e| panic!("{here}: the answer is not JSON ({e}):\n{actual}"));
        if let Some(m) = mismatch(&parse_pattern(expected), &value, "") {
            panic!("{here}: {m}\nserver answered:\n{actual}");
        }
        return;
    }
    assert!(success, "{here} failed:\n{stdout}\n{stderr}");
    let want: Vec<&str> = expected.lines().collect();
    let got: Vec<&str> = actual.trim().lines().collect();
    let took = |l: &str| l.starts_with("took ") && l.ends_with(" s");
    let same = want.len() == got.len()
        && want
            .iter()
            .zip(&got)
            .all(|(w, g)| w == g || (took(w) && took(g)));
    assert!(
        same,
        "{here}: README shows\n{expected}\nthe server printed\n{}",
        actual.trim()
    );
}

/// The README from the top, on one fresh database.
// Commands run as blocking child processes: the server needs threads of its own meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_replays_top_to_bottom_on_one_fresh_database() {
    let buf = buf_path();
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let steps = steps(&readme);
    assert!(
        steps
            .iter()
            .filter(|s| s.command.starts_with("buf curl"))
            .count()
            >= 10
            && steps.iter().any(|s| s.command.starts_with("patron import")),
        "the README's walkthrough was not found: {steps:#?}"
    );

    let (url, _guard) = fresh_database(Backend::Sqlite).await;
    let app = Application::build(Settings::for_database(&url))
        .await
        .expect("server builds");
    let addr = app.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.run_until_stopped(async move {
            let _ = stopped.await;
        })
        .await
        .expect("server runs");
    });
    drop(connect(addr).await);
    let days_since = |(y, m, d): (i32, i32, i32)| {
        patron_grpc::time::now().day().as_days()
            - Date::new(y, m, d).expect("date").to_day().as_days()
    };
    let shift = days_since(README_DAY);
    // `patron import` runs where `examples/` holds the data set with its dates moved.
    let moved = tempfile::tempdir().expect("temporary directory");
    std::fs::create_dir(moved.path().join("examples")).expect("examples directory");
    for file in ["customers.csv", "transactions.csv"] {
        let text = std::fs::read_to_string(root.join("examples").join(file)).expect(file);
        std::fs::write(
            moved.path().join("examples").join(file),
            shift_dates(&text, days_since(EXAMPLES_DAY)),
        )
        .expect("moved example data");
    }

    for step in &steps {
        let command = shift_dates(&step.command, shift);
        let expected = shift_dates(&step.output, shift);
        let out = if let Some(rest) = command.strip_prefix("buf curl") {
            let rest = rest
                .trim_start()
                .strip_prefix("...")
                .map_or(rest.to_owned(), |r| {
                    format!(" --protocol grpc --http2-prior-knowledge{r}")
                })
                .replace("http://127.0.0.1:50051", &format!("http://{addr}"));
            Command::new("sh")
                .arg("-c")
                .arg(format!("\"$BUF\" curl {rest}"))
                .env("BUF", &buf)
                .current_dir(&root)
                .output()
                .expect("run buf")
        } else if let Some(rest) = command.strip_prefix("patron ") {
            let out = Command::new(env!("CARGO_BIN_EXE_patron"))
                .args(rest.split_whitespace())
                .env("PATRON_DATABASE_URL", &url)
                .env("PATRON_LOG", "warn")
                .current_dir(moved.path())
                .output()
                .expect("run patron");
            // Another process wrote the database: the server reads the change feed every
            // 200 ms; a reader typing the next command is slower than that.
            tokio::time::sleep(Duration::from_secs(1)).await;
            out
        } else {
            panic!(
                "README line {}: the replay does not know `{command}`",
                step.line
            );
        };
        compare(
            step,
            &expected,
            &String::from_utf8_lossy(&out.stdout),
            &String::from_utf8_lossy(&out.stderr),
            out.status.success(),
        );
    }
    let _ = stop.send(());
    server.await.expect("server stops");
}

/// The replay's own reading of the README's conventions.
#[test]
fn patterns_and_dates() {
    let pat = parse_pattern(r#"{"a": "1", "b": [{"c": 2}, ...], ...}"#);
    let ok = serde_json::json!({"a": "1", "b": [{"c": 2}, {"c": 3}], "z": true});
    assert_eq!(mismatch(&pat, &ok, ""), None);
    let bad = serde_json::json!({"a": "2", "b": [{"c": 2}]});
    assert!(mismatch(&pat, &bad, "").is_some());
    let closed = parse_pattern(r#"{"a": "1"}"#);
    assert!(mismatch(&closed, &serde_json::json!({"a": "1", "b": 1}), "").is_some());
    assert_eq!(
        shift_dates("x 2026-11-23T1 20261123 2026-12-31", 1),
        "x 2026-11-24T1 20261123 2027-01-01"
    );
    let readme = "<!-- not replayed: demo -->\n```sh\n$ buf curl skipped\n```\n```sh\n$ buf curl -d '{\n  \"a\": 1\n}' \\\n  http://x/Y\n{\"ok\": 1}\n$ patron import --x\n```\n";
    let steps = steps(readme);
    assert_eq!(steps.len(), 2, "{steps:#?}");
    assert_eq!(
        steps[0].command,
        "buf curl -d '{\n  \"a\": 1\n}' \\\n  http://x/Y"
    );
    assert_eq!(steps[0].output, "{\"ok\": 1}\n");
    assert_eq!(steps[1].command, "patron import --x");
}

/// Every key of the configuration file is in the README's "Configuration" table, and each has a
/// flag in `patron --help` or `patron serve --help` unless the table says "file only".
#[test]
fn every_config_key_is_documented_with_its_flag() {
    let root = repo_root();
    let config = std::fs::read_to_string(root.join("crates/patron-server/src/config.rs"))
        .expect("config.rs");
    let start = config
        .find("pub struct FileConfig {")
        .expect("FileConfig in config.rs");
    let body = &config[start..start + config[start..].find("\n}").expect("end of FileConfig")];
    let keys: Vec<&str> = body
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("pub ")?
                .split_once(':')
                .map(|(k, _)| k)
        })
        .filter(|k| !k.contains(' '))
        .collect();
    assert!(keys.len() > 20, "{keys:?}");

    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let from = readme
        .find("\n## Configuration")
        .expect("a Configuration section");
    let section = &readme[from..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |e| e + 1)];

    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_patron"))
            .args(args)
            .output()
            .expect("run patron --help");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let help = help(&["--help"]) + &help(&["serve", "--help"]);

    for key in keys {
        let row = section
            .lines()
            .find(|l| {
                l.starts_with('|')
                    && [
                        format!("`{key}`"),
                        format!("`[{key}]`"),
                        format!("`[[{key}]]`"),
                    ]
                    .iter()
                    .any(|k| l.contains(k.as_str()))
            })
            .unwrap_or_else(|| panic!("config key `{key}` is not in README's Configuration table"));
        if row.contains("file only") {
            continue;
        }
        let flag = match key {
            "database_url" => "--database ".to_owned(),
            "api_keys" => "--api-key ".to_owned(),
            "jwt" => "--jwt-".to_owned(),
            "client_certificates" => "--client-certificate ".to_owned(),
            _ => format!("--{} ", key.replace('_', "-")),
        };
        assert!(
            help.contains(&flag),
            "config key `{key}` has no {flag} in `patron --help` / `patron serve --help`"
        );
        assert!(
            row.contains(flag.trim_end()),
            "README's row for `{key}` does not name {flag}"
        );
    }
}
