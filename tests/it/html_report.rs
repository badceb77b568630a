//! The report files people open: `report.html` rendered by a real browser
//! (headless Chromium: every chart drawn, the inline script without errors,
//! a screenshot that is not blank) and the CSV export holding exactly
//! results.json's numbers. The runs are a small fp32 + int8 pair of one zoo
//! model with every probe set, so each section of the page has content.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use crate::util::*;

const CHROMIUM: &str = "/usr/bin/chromium";
/// Markup in a model name: the page must show it as text, never run it.
const HOSTILE_NAME: &str = "cnn<script>document.title='pwned'</script>&\"x\"";

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "command failed: {cmd:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One `quba eval` of cnn-baseline fp32 and int8 (renamed to HOSTILE_NAME
/// through their sidecars), shared by the tests of this file.
struct Runs {
    runs_dir: PathBuf,
    dirs: Vec<PathBuf>,
}

fn runs() -> &'static Runs {
    static RUNS: OnceLock<Runs> = OnceLock::new();
    RUNS.get_or_init(|| {
        let t = tmp!("runs");
        let models = t.join("models");
        std::fs::create_dir_all(&models).unwrap();
        let mut args: Vec<PathBuf> = Vec::new();
        for p in ["fp32", "int8"] {
            let stem = format!("cnn-baseline.{p}");
            std::fs::copy(root().join(format!("models/zoo/{stem}.onnx")), models.join(format!("{stem}.onnx"))).unwrap();
            let sidecar = root().join(format!("models/zoo/{stem}.json"));
            let mut meta: Value = serde_json::from_str(&std::fs::read_to_string(&sidecar).unwrap()).unwrap();
            meta["name"] = Value::from(HOSTILE_NAME);
            std::fs::write(models.join(format!("{stem}.json")), meta.to_string()).unwrap();
            args.push(models.join(format!("{stem}.onnx")));
        }
        let runs_dir = t.join("runs");
        let mut cmd = Command::new(QUBA);
        cmd.arg("eval");
        for m in &args {
            cmd.arg("--model").arg(m);
        }
        cmd.args(["--per-class", "2", "--corruption-per-class", "1", "--attack-per-class", "1", "--bootstrap", "20"])
            .args(["--progress", "quiet", "--jobs", "1", "--runs-dir"])
            .arg(&runs_dir);
        ok(&mut cmd);
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&runs_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("manifest.json").exists())
            .collect();
        dirs.sort();
        assert_eq!(dirs.len(), 2, "{dirs:?}");
        Runs { runs_dir, dirs }
    })
}

fn results(runs: &Runs) -> Value {
    serde_json::from_str(&std::fs::read_to_string(runs.runs_dir.join("results.json")).unwrap()).unwrap()
}

#[test]
fn eval_writes_the_report_files_next_to_results_json() {
    let r = runs();
    for f in ["results.json", "report.html", "results.csv", "results.xlsx"] {
        let p = r.runs_dir.join(f);
        let len = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).len();
        assert!(len > 100, "{} has {len} bytes", p.display());
    }
    // An xlsx is a zip archive.
    assert_eq!(&std::fs::read(r.runs_dir.join("results.xlsx")).unwrap()[..2], b"PK");
}

fn num(s: &str) -> Option<f64> {
    (!s.is_empty()).then(|| s.parse().unwrap_or_else(|e| panic!("{s:?} is not a number: {e}")))
}

/// Equal to the last bits: serde_json (without `float_roundtrip`) may read a
/// number one ulp off the f64 it was written from.
fn same(csv: Option<f64>, json: Option<f64>, what: &str) {
    match (csv, json) {
        (Some(a), Some(b)) => assert!((a - b).abs() <= 4.0 * f64::EPSILON * b.abs(), "{what}: csv {a}, json {b}"),
        _ => assert_eq!(csv, json, "{what}"),
    }
}

#[test]
fn csv_holds_results_json_numbers_one_row_per_run() {
    let r = runs();
    let out = tmp!("csv").join("out.csv");
    ok(Command::new(QUBA).arg("report").args(&r.dirs).args(["--bootstrap", "20", "--csv"]).arg(&out));
    let json = results(r);
    let models = json["models"].as_array().unwrap();
    let mut rdr = csv::Reader::from_path(&out).unwrap();
    let head: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(&head[..7], ["model", "precision", "int8_format", "target", "backend", "quba", "accuracy"]);
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), models.len());
    let dims = models[0]["dimensions"].as_object().unwrap();
    let mut parts_checked = 0;
    for (row, m) in rows.iter().zip(models) {
        let cell = |c: &str| &row[head.iter().position(|h| h == c).unwrap_or_else(|| panic!("no column {c}"))];
        assert_eq!(cell("model"), m["name"].as_str().unwrap());
        assert_eq!(cell("precision"), m["precision"].as_str().unwrap());
        same(num(cell("quba")), m["quba"].as_f64(), "quba");
        for k in dims.keys() {
            same(num(cell(k)), m["dimensions"][k].as_f64(), k);
            same(num(cell(&format!("{k}_lo"))), m["intervals"][k][0].as_f64(), &format!("{k}_lo"));
            same(num(cell(&format!("{k}_hi"))), m["intervals"][k][1].as_f64(), &format!("{k}_hi"));
        }
        for (k, v) in m["parts"].as_object().unwrap() {
            same(num(cell(k)), v.as_f64(), &format!("part {k}"));
            parts_checked += 1;
        }
    }
    assert!(parts_checked > 150, "only {parts_checked} parts: the runs lack corruption cells?");
}

/// What Chromium printed, or `None` (after saying why) when there is no browser to use.
fn chromium(page: &Path, profile: &Path, mode: &[&str]) -> Option<(String, String)> {
    if !Path::new(CHROMIUM).exists() {
        if std::env::var("QUBA_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("{CHROMIUM} is missing and QUBA_REQUIRE_BROWSER=1");
        }
        eprintln!("skipped: {CHROMIUM} is not installed (apt-get install chromium; QUBA_REQUIRE_BROWSER=1 makes this an error)");
        return None;
    }
    let out = Command::new(CHROMIUM)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"])
        .args(["--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(mode)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("spawn chromium");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "chromium failed: {err}");
    Some((String::from_utf8_lossy(&out.stdout).into_owned(), err))
}

fn no_script_errors(log: &str) {
    let bad: Vec<&str> = log.lines().filter(|l| l.contains("Uncaught") || l.contains(":CONSOLE")).collect();
    assert!(bad.is_empty(), "the page logged to the console:\n{}", bad.join("\n"));
}

#[test]
fn browser_draws_every_chart_without_script_errors() {
    let r = runs();
    let t = tmp!("browser");
    let page = t.join("report.html");
    ok(Command::new(QUBA).arg("report").args(&r.dirs).args(["--bootstrap", "20", "--html"]).arg(&page));
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: the only URL is the SVG namespace.
    assert_eq!(html.matches("http").count(), html.matches("http://www.w3.org/2000/svg").count(), "the page refers to the network");
    assert!(!html.contains("<script>document.title"), "a model name went into the page unescaped");
    assert!(html.contains("cnn&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;&amp;&quot;x&quot;"));
    for section in ["Ranking", "Profile", "Any two dimensions", "fp32 → int8", "Corruptions × severities", "Calibration", "Shape vs texture", "Protocol"] {
        assert!(html.contains(&format!("<h2>{section}")), "no section {section}");
    }
    assert!(!html.contains("class=\"absent\""), "a section had nothing to draw:\n{}", html.split("class=\"absent\"").nth(1).unwrap_or("").chars().take(300).collect::<String>());

    let Some((dom, log)) = chromium(&page, &t.join("profile-dom"), &["--dump-dom"]) else { return };
    no_script_errors(&log);
    assert!(dom.contains("<title>QUBA report"), "the name's script ran or the page did not load: {}", &dom[..dom.len().min(300)]);
    let charts: Vec<&str> = dom
        .split("<svg ")
        .skip(1)
        .filter(|s| s.split('>').next().unwrap().contains("class=\"chart\""))
        .map(|s| s.split("</svg>").next().unwrap())
        .collect();
    // ranking has none; radar 2, scatter 1, deltas 1, corruptions 15, reliability 2, shape 2.
    assert_eq!(charts.len(), 23, "charts drawn");
    for c in &charts {
        let label = c.split("aria-label=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or("?");
        let marks = ["<path class=\"series\"", "<circle", "<rect"].iter().map(|m| c.matches(m).count()).sum::<usize>();
        assert!(marks >= 1, "chart {label:?} has no data marks");
    }
    // The fp32 → int8 forest plot draws each dimension's equivalence margin
    // as a band behind its delta.
    let deltas = charts.iter().find(|c| c.contains("aria-label=\"deltas ")).expect("a deltas chart");
    let dots = deltas.matches("<circle").count();
    assert!(dots > 0 && deltas.matches("<rect class=\"margin\"").count() == dots, "one margin band per delta: {deltas}");
    // The axis selector's script redrew the scatter's axes on load.
    let scatter = dom.split("id=\"scatter-axes\"").nth(1).unwrap().split("</g>").next().unwrap();
    assert!(scatter.matches("class=\"tick\"").count() >= 4, "scatter axes not drawn: {scatter}");

    let shot = t.join("shot.png");
    let Some((_, log)) = chromium(&page, &t.join("profile-shot"), &[&format!("--screenshot={}", shot.display()), "--window-size=1280,4000"])
    else {
        return;
    };
    no_script_errors(&log);
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    assert_eq!(width, 1280);
    // A blank 1280×4000 page compresses to a few KB; charts and text do not.
    assert!(png.len() > 60_000, "screenshot of {} bytes looks blank", png.len());
}
