//! `report.html`: one self-contained page people would rather look at than
//! results.json (docs/report.md).
//!
//! Every chart is SVG written here, inline: the file opens offline, fetches
//! nothing, and prints to PDF as drawn. The only script moves the scatter's
//! points when another pair of dimensions is chosen; without it the page
//! still shows the default pair.

use std::fmt::Write as _;

use anyhow::Result;
use serde_json::json;

use crate::compare::{self, CompareOptions, Comparison, Verdict};
use crate::metrics::ReliabilityBin;
use crate::protocol::{Outputs, Precision, CORRUPTIONS};
use crate::quba::{Dimension, Normalisation, TableRow};
use crate::report::{self, CueCategory, Report, Run};

/// Column heads of the terminal table, reused so both outputs name a dimension alike.
const SHORT: [&str; 9] = ["Acc", "Adv", "Corr", "OOD", "CalErr", "ClsBal", "ObjFoc", "Shape", "Par(M)"];

/// Colour-blind-safe (Okabe–Ito, then Tol) hues, one per model name; int8
/// runs reuse their model's hue, dashed.
const PALETTE: [&str; 12] =
    ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#332288", "#882255", "#117733", "#999933", "#AA4499", "#44AA99"];

/// Escapes text from files (model names, paths) for HTML text and attributes.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Four significant digits: calibration errors (~0.004) and parameter
/// counts (~50) in one column both stay readable.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let decimals = (3 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    format!("{v:.decimals$}")
}

fn signed(v: f64) -> String {
    if v > 0.0 {
        format!("+{}", num(v))
    } else {
        num(v)
    }
}

/// A run as the page names it.
fn run_label(run: &Run) -> String {
    let h = &run.header;
    let mut s = format!("{} {}", h.model_name, h.precision.as_str());
    if !h.int8_format.is_empty() {
        s += &format!(" ({})", h.int8_format);
    }
    s
}

/// Line style of each run: hue by model name, dashed for int8.
struct Style {
    colour: &'static str,
    dashed: bool,
}

fn styles(rep: &Report) -> Vec<Style> {
    let mut names: Vec<&str> = Vec::new();
    rep.runs
        .iter()
        .map(|r| {
            let i = names.iter().position(|n| *n == r.header.model_name).unwrap_or_else(|| {
                names.push(&r.header.model_name);
                names.len() - 1
            });
            Style { colour: PALETTE[i % PALETTE.len()], dashed: r.header.precision == Precision::Int8 }
        })
        .collect()
}

impl Style {
    fn stroke(&self) -> String {
        format!("stroke=\"{}\"{}", self.colour, if self.dashed { " stroke-dasharray=\"5 3\"" } else { "" })
    }
}

/// Linear map from data to pixels.
#[derive(Clone, Copy)]
struct Scale {
    d0: f64,
    d1: f64,
    r0: f64,
    r1: f64,
}

impl Scale {
    fn new((d0, d1): (f64, f64), r0: f64, r1: f64) -> Scale {
        // A degenerate domain (one model, equal values) still needs a width.
        let (d0, d1) = if d1 > d0 { (d0, d1) } else { (d0 - 0.5 * d0.abs().max(1e-3), d1 + 0.5 * d1.abs().max(1e-3)) };
        Scale { d0, d1, r0, r1 }
    }

    fn at(&self, v: f64) -> f64 {
        self.r0 + (v - self.d0) / (self.d1 - self.d0) * (self.r1 - self.r0)
    }

    /// About five round-numbered ticks inside the domain, as (value, label);
    /// labels carry as many decimals as the step needs.
    fn ticks(&self) -> Vec<(f64, String)> {
        let span = self.d1 - self.d0;
        let raw = span / 5.0;
        let mag = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= 6.0).unwrap_or(10.0 * mag);
        let decimals = (-step.log10().floor()).max(0.0) as usize;
        let mut t = (self.d0 / step).ceil() * step;
        let mut out = Vec::new();
        while t <= self.d1 + step * 1e-9 {
            let v = if t.abs() < step * 1e-9 { 0.0 } else { t };
            out.push((v, format!("{v:.decimals$}")));
            t += step;
        }
        out
    }
}

/// Range of values with a 5% margin.
fn padded(vals: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return None;
    }
    let m = (hi - lo) * 0.05;
    Some((lo - m, hi + m))
}

/// Axes with ticks and labels: the frame every x–y chart shares.
fn axes(svg: &mut String, x: &Scale, y: &Scale, xlabel: &str, ylabel: &str) {
    let (top, bottom, left, right) = (y.r1, y.r0, x.r0, x.r1);
    let _ = write!(svg, "<g class=\"axes\"><path class=\"frame\" d=\"M{left:.1},{top:.1}V{bottom:.1}H{right:.1}\"/>");
    for (t, label) in x.ticks() {
        let px = x.at(t);
        let _ = write!(svg, "<line class=\"grid\" x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{top:.1}\" y2=\"{bottom:.1}\"/><text class=\"tick\" x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>", bottom + 12.0);
    }
    for (t, label) in y.ticks() {
        let py = y.at(t);
        let _ = write!(svg, "<line class=\"grid\" x1=\"{left:.1}\" x2=\"{right:.1}\" y1=\"{py:.1}\" y2=\"{py:.1}\"/><text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>", left - 4.0, py + 3.0);
    }
    let _ = write!(
        svg,
        "<text class=\"axis-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text><text class=\"axis-label\" transform=\"translate({:.1},{:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text></g>",
        (left + right) / 2.0,
        bottom + 26.0,
        esc(xlabel),
        left - 34.0,
        (top + bottom) / 2.0,
        esc(ylabel)
    );
}

fn svg_open(w: f64, h: f64, title: &str) -> String {
    format!("<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\">", esc(title))
}

/// One fp32/int8 or board/reference pair the page compares, or why it could not.
pub struct Pair {
    pub kind: &'static str,
    pub result: std::result::Result<Comparison, String>,
}

/// Pairs worth comparing: each model's fp32 run against each of its int8 runs
/// on the same target and backend; and runs of the same ONNX file (sha256) on
/// different targets or backends, the earlier run as the reference.
pub fn pairs(runs: &[Run], opts: &CompareOptions) -> Vec<Pair> {
    let mut todo: Vec<(&'static str, &Run, &Run)> = Vec::new();
    let platform = |r: &Run| (r.header.target.clone(), r.header.backend);
    for (i, a) in runs.iter().enumerate() {
        for (j, b) in runs.iter().enumerate() {
            let (ha, hb) = (&a.header, &b.header);
            let kind = if ha.model_name == hb.model_name
                && ha.precision == Precision::Fp32
                && hb.precision == Precision::Int8
                && platform(a) == platform(b)
            {
                "fp32 → int8"
            } else if i < j && ha.model_sha256 == hb.model_sha256 && platform(a) != platform(b) {
                "reference → board"
            } else {
                continue;
            };
            todo.push((kind, a, b));
        }
    }
    // Each paired bootstrap re-evaluates both runs per resample: the zoo's
    // eight pairs take long enough to be worth all cores.
    std::thread::scope(|scope| {
        let handles: Vec<_> = todo
            .iter()
            .map(|&(kind, a, b)| scope.spawn(move || Pair { kind, result: compare::compare(a, b, opts).map_err(|e| format!("{e:#}")) }))
            .collect();
        handles.into_iter().map(|h| h.join().expect("a comparison thread panicked")).collect()
    })
}

/// Everything the page shows beyond the report itself.
pub struct Extras<'a> {
    pub pairs: &'a [Pair],
    /// The study's 326 models, for ImageNet runs only.
    pub study: Option<&'a [TableRow]>,
}

pub fn render(rep: &Report, extras: &Extras) -> Result<String> {
    let st = styles(rep);
    let mut body = String::new();
    body += &header(rep);
    body += &ranking(rep);
    body += &radar(rep, &st);
    body += &scatter(rep, &st, extras.study);
    body += &deltas(extras.pairs);
    body += &corruption_curves(rep, &st);
    body += &reliability(rep, &st)?;
    body += &cue_conflict(rep)?;
    body += &protocol(rep);
    Ok(format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>QUBA report — {}</title><style>{CSS}</style></head><body>{body}<script>{JS}</script></body></html>\n",
        esc(&rep.benchmark())
    ))
}

fn header(rep: &Report) -> String {
    let mut s = format!(
        "<header><h1>QUBA report</h1><p class=\"meta\">{} model run(s) · benchmark <b>{}</b> · normalisation <b>{}</b> · quba-edge {}</p>",
        rep.runs.len(),
        esc(&rep.benchmark()),
        match rep.normalisation {
            Normalisation::Paper => "paper (the study's ImageNet constants)",
            Normalisation::Cohort => "cohort (mean and n−1 std of the models in this report)",
        },
        env!("CARGO_PKG_VERSION")
    );
    let mut notes: Vec<String> = rep.warnings();
    let mut reasons: Vec<String> = rep.scored.iter().filter_map(|sc| sc.reason.clone()).collect();
    reasons.dedup();
    notes.extend(reasons.into_iter().map(|r| format!("no QUBA: {r}")));
    if !notes.is_empty() {
        s += "<ul class=\"notes\">";
        for n in notes {
            let _ = write!(s, "<li>{}</li>", esc(&n));
        }
        s += "</ul>";
    }
    s + "</header>"
}

/// Runs in QUBA order, those without a score last in run order.
fn by_quba(rep: &Report) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rep.runs.len()).collect();
    order.sort_by(|&a, &b| match (rep.scored[a].quba, rep.scored[b].quba) {
        (Some(x), Some(y)) => y.total_cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(&b),
    });
    order
}

/// An interval under its value, or nothing.
fn ci(interval: Option<(f64, f64)>) -> String {
    interval.map(|(lo, hi)| format!("<br><span class=\"ci\">[{}, {}]</span>", num(lo), num(hi))).unwrap_or_default()
}

fn ranking(rep: &Report) -> String {
    let mut s = String::from(
        "<section class=\"box\"><h2>Ranking</h2><p class=\"legend\">Sorted by QUBA. Each value with its 95% paired bootstrap \
         interval below it (resampling images; a clean image and its corrupted and attacked versions are drawn together); \
         QUBA's interval holds the normalisation fixed; — where a dimension was not measured. Calibration error and parameters: lower is better.</p>\
         <table class=\"rank\"><thead><tr><th>#</th><th>model</th><th>precision</th><th>int8 format</th><th>QUBA</th>",
    );
    for (d, short) in Dimension::ALL.iter().zip(SHORT) {
        let _ = write!(s, "<th title=\"{}\">{short}{}</th>", esc(d.label()), if d.higher_is_better() { "↑" } else { "↓" });
    }
    s += "</tr></thead><tbody>";
    for (rank, i) in by_quba(rep).into_iter().enumerate() {
        let (run, res, sc) = (&rep.runs[i], &rep.results[i], &rep.scored[i]);
        let h = &run.header;
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"q\">{}{}</td>",
            rank + 1,
            esc(&h.model_name),
            h.precision.as_str(),
            esc(if h.int8_format.is_empty() { "—" } else { &h.int8_format }),
            sc.quba.map(num).unwrap_or_else(|| "—".into()),
            ci(sc.interval)
        );
        for d in Dimension::ALL {
            let k = d.index();
            match res.values[k] {
                None => {
                    let why = res.missing.get(&d).map(String::as_str).unwrap_or("not measured");
                    let _ = write!(s, "<td class=\"na\" title=\"{}\">—</td>", esc(why));
                }
                Some(v) => {
                    let _ = write!(s, "<td>{}{}</td>", num(v), ci(res.intervals[k]));
                }
            }
        }
        s += "</tr>";
    }
    s + "</tbody></table></section>"
}

/// z-scores drawn from −3 (centre) to +3 (rim).
const RADAR_Z: f64 = 3.0;

fn radar(rep: &Report, st: &[Style]) -> String {
    let mut s = String::from(
        "<section class=\"box\"><h2>Profile: the nine normalised dimensions</h2><p class=\"legend\">Each spoke is a dimension's \
         normalised value (<code>Scored::normalised</code>): a z-score against the normalisation's mean and standard deviation, \
         with the sign already flipped for calibration error and parameters, so <b>outward is better on every spoke</b>. \
         The bold ring is z = 0 (the mean), the others z = ±2; the rim is +3. Spokes without a dot were not measured.</p><div class=\"panels\">",
    );
    let mut drawn = 0;
    for i in by_quba(rep) {
        let z = rep.scored[i].normalised;
        if z.iter().all(Option::is_none) {
            continue;
        }
        drawn += 1;
        let (w, h, cx, cy, r) = (250.0, 230.0, 125.0, 118.0, 80.0);
        let mut svg = svg_open(w, h, &format!("profile of {}", run_label(&rep.runs[i])));
        let spoke = |k: usize, rad: f64| {
            let a = -std::f64::consts::FRAC_PI_2 + k as f64 * std::f64::consts::TAU / 9.0;
            (cx + rad * a.cos(), cy + rad * a.sin())
        };
        let radius = |zv: f64| r * ((zv.clamp(-RADAR_Z, RADAR_Z) + RADAR_Z) / (2.0 * RADAR_Z));
        for ring in [-2.0, 0.0, 2.0, RADAR_Z] {
            let pts: Vec<String> = (0..9).map(|k| spoke(k, radius(ring))).map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = write!(svg, "<polygon class=\"{}\" points=\"{}\"/>", if ring == 0.0 { "ring0" } else { "ring" }, pts.join(" "));
        }
        for (k, short) in SHORT.iter().enumerate() {
            let (x, y) = spoke(k, r);
            let (lx, ly) = spoke(k, r + 14.0);
            let _ = write!(svg, "<line class=\"grid\" x1=\"{cx}\" y1=\"{cy}\" x2=\"{x:.1}\" y2=\"{y:.1}\"/><text class=\"tick\" x=\"{lx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{short}</text>", ly + 3.0);
        }
        let pts: Vec<(usize, f64, f64)> = z.iter().enumerate().filter_map(|(k, v)| v.map(|v| (k, spoke(k, radius(v))))).map(|(k, (x, y))| (k, x, y)).collect();
        let d: String = pts.iter().enumerate().map(|(j, (_, x, y))| format!("{}{x:.1},{y:.1}", if j == 0 { "M" } else { "L" })).collect();
        let _ = write!(svg, "<path class=\"series\" d=\"{d}Z\" fill=\"{}\" fill-opacity=\"0.15\" {}/>", st[i].colour, st[i].stroke());
        for (k, x, y) in &pts {
            let _ = write!(
                svg,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{}\"><title>{}: z = {}</title></circle>",
                st[i].colour,
                Dimension::ALL[*k].label(),
                z[*k].map(signed).unwrap_or_default()
            );
        }
        svg += "</svg>";
        let q = rep.scored[i].quba.map(|q| format!(" · QUBA {}", num(q))).unwrap_or_default();
        let _ = write!(s, "<figure>{svg}<figcaption>{}{q}</figcaption></figure>", esc(&run_label(&rep.runs[i])));
    }
    if drawn == 0 {
        let why = rep.scored.iter().find_map(|sc| sc.reason.clone()).unwrap_or_else(|| "no dimension could be normalised".into());
        let _ = write!(s, "<p class=\"absent\">No normalised values: {}.</p>", esc(&why));
    }
    s + "</div></section>"
}

/// Share of the study's models this value beats, ties counting half;
/// "beats" follows the dimension's direction.
fn percentile(d: Dimension, v: f64, study: &[TableRow]) -> Option<f64> {
    let others: Vec<f64> = study.iter().filter_map(|r| r.values[d.index()]).filter(|x| x.is_finite()).collect();
    if others.is_empty() {
        return None;
    }
    let better = |x: f64| if d.higher_is_better() { v > x } else { v < x };
    let beaten = others.iter().filter(|&&x| better(x)).count() as f64;
    let ties = others.iter().filter(|&&x| x == v).count() as f64;
    Some(100.0 * (beaten + 0.5 * ties) / others.len() as f64)
}

const SCATTER: (f64, f64, f64, f64, f64, f64) = (640.0, 440.0, 70.0, 620.0, 20.0, 390.0); // w, h, left, right, top, bottom
const SCATTER_DEFAULT: (Dimension, Dimension) = (Dimension::Accuracy, Dimension::CorruptionRobustness);

fn scatter(rep: &Report, st: &[Style], study: Option<&[TableRow]>) -> String {
    let imagenet = rep.runs.iter().all(|r| r.header.benchmark == "imagenet");
    let study = study.filter(|_| imagenet);
    let mut s = String::from("<section class=\"box\"><h2>Any two dimensions</h2>");
    s += &match study {
        Some(t) => format!(
            "<p class=\"legend\">Grey: the study's {} ImageNet models (data/reference/study_326_models.csv), the landscape these \
             runs sit in. Coloured: the evaluated runs (dashed outline: int8). Hover a point for its model.</p>",
            t.len()
        ),
        None => "<p class=\"legend\">Only the evaluated runs (dashed outline: int8); hover a point for its model. The study's 326-model \
                 landscape is drawn for ImageNet runs only: on another benchmark its values are not comparable.</p>"
            .into(),
    };
    // Points as JSON for the axis selector: [name, nine values] per point.
    let point = |name: String, v: &[Option<f64>; 9]| json!([name, v.iter().map(|x| x.filter(|x| x.is_finite())).collect::<Vec<_>>()]);
    let models: Vec<_> = rep.runs.iter().zip(&rep.results).map(|(r, res)| point(run_label(r), &res.values)).collect();
    let background: Vec<_> = study.unwrap_or(&[]).iter().map(|r| point(r.name.clone(), &r.values)).collect();
    let data = json!({"models": models, "study": background, "labels": Dimension::ALL.map(|d| d.label())});
    let (w, h, left, right, top, bottom) = SCATTER;
    let (dx, dy) = SCATTER_DEFAULT;
    let values = |d: Dimension| {
        let i = d.index();
        rep.results.iter().map(move |r| r.values[i]).chain(study.unwrap_or(&[]).iter().map(move |r| r.values[i])).flatten()
    };
    let (Some(rx), Some(ry)) = (padded(values(dx)), padded(values(dy))) else {
        return s + "<p class=\"absent\">No run has both accuracy and corruption robustness; no scatter.</p></section>";
    };
    let options = |sel: Dimension| -> String {
        Dimension::ALL.iter().enumerate().map(|(i, d)| format!("<option value=\"{i}\"{}>{}</option>", if *d == sel { " selected" } else { "" }, d.label())).collect()
    };
    let _ = write!(
        s,
        "<form class=\"axes-select noprint\">x <select id=\"sx\">{}</select> y <select id=\"sy\">{}</select></form>",
        options(dx),
        options(dy)
    );
    let (x, y) = (Scale::new(rx, left, right), Scale::new(ry, bottom, top));
    let mut svg = svg_open(w, h, "scatter of two dimensions").replacen("<svg class=\"chart\"", "<svg id=\"scatter\" class=\"chart\"", 1);
    svg += "<g id=\"scatter-axes\">";
    axes(&mut svg, &x, &y, dx.label(), dy.label());
    svg += "</g>";
    let circle = |svg: &mut String, group: &str, i: usize, v: &[Option<f64>; 9], name: &str, attrs: &str| {
        let shown = v[dx.index()].zip(v[dy.index()]);
        let (cx, cy) = shown.map(|(a, b)| (x.at(a), y.at(b))).unwrap_or((0.0, 0.0));
        let _ = write!(
            svg,
            "<circle class=\"{group}\" data-i=\"{i}\" cx=\"{cx:.1}\" cy=\"{cy:.1}\" {attrs}{}><title>{}</title></circle>",
            if shown.is_none() { " display=\"none\"" } else { "" },
            esc(name)
        );
    };
    for (i, r) in study.unwrap_or(&[]).iter().enumerate() {
        circle(&mut svg, "study", i, &r.values, &r.name, "r=\"3\"");
    }
    for (i, (run, res)) in rep.runs.iter().zip(&rep.results).enumerate() {
        circle(&mut svg, "model", i, &res.values, &run_label(run), &format!("r=\"6\" fill=\"{}\" fill-opacity=\"0.8\" stroke-width=\"2\" {}", st[i].colour, st[i].stroke()));
    }
    svg += "</svg>";
    // `<` as a JSON escape: no name can end the script element or open a comment in it.
    let json_text = serde_json::to_string(&data).unwrap_or_default().replace('<', "\\u003c");
    let _ = write!(
        s,
        "{svg}<script type=\"application/json\" id=\"scatter-data\">{json_text}</script><script type=\"application/json\" id=\"scatter-frame\">{}</script>",
        json!([w, h, left, right, top, bottom])
    );
    if let Some(t) = study {
        s += "<h3>Percentile among the study's models</h3><p class=\"legend\">Share of the study's models each run beats on a dimension \
              (lower is better for calibration error and parameters; ties count half).</p><table class=\"rank\"><thead><tr><th>model</th>";
        for short in SHORT {
            let _ = write!(s, "<th>{short}</th>");
        }
        s += "</tr></thead><tbody>";
        for (run, res) in rep.runs.iter().zip(&rep.results) {
            let _ = write!(s, "<tr><td>{}</td>", esc(&run_label(run)));
            for d in Dimension::ALL {
                let p = res.values[d.index()].and_then(|v| percentile(d, v, t));
                let _ = write!(s, "<td>{}</td>", p.map(|p| format!("{p:.0}%")).unwrap_or_else(|| "—".into()));
            }
            s += "</tr>";
        }
        s += "</tbody></table>";
    }
    s + "</section>"
}

fn deltas(pairs: &[Pair]) -> String {
    let mut s = String::from(
        "<section class=\"box\"><h2>fp32 → int8 and reference → board</h2><p class=\"legend\">Each row: b − a for one dimension \
         (dot) with its 95% paired-bootstrap interval (bar; both runs resampled on the same images). Each row has its own \
         symmetric scale around the zero line, since dimensions differ in units; the shaded band is the dimension's \
         equivalence margin (by default a fifth of the study's normalisation std). Verdict <i>equal</i>: the whole interval \
         lies inside the band; <i>differs</i>: it excludes 0; <i>inconclusive</i>: neither, with how many times the images \
         would settle it.</p>",
    );
    if pairs.is_empty() {
        return s + "<p class=\"absent\">No pair to compare: no model has both an fp32 and an int8 run on one target, and no ONNX \
                    file was run on two targets or backends.</p></section>";
    }
    for p in pairs {
        let c = match &p.result {
            Err(e) => {
                let _ = write!(s, "<div class=\"chart-box\"><h3>{}</h3><p class=\"absent\">Not compared: {}</p></div>", p.kind, esc(e));
                continue;
            }
            Ok(c) => c,
        };
        let pct = |v: Option<f64>| v.map(|x| format!("{:.2}%", 100.0 * x)).unwrap_or_else(|| "—".into());
        let _ = write!(
            s,
            "<div class=\"chart-box\"><h3>{}: {} → {}</h3><p class=\"meta\">top-1 agreement {} of {} paired records ({} on clean)</p>",
            p.kind,
            esc(&c.a),
            esc(&c.b),
            pct(c.agreement),
            c.paired,
            pct(c.clean_agreement)
        );
        let (label_w, plot_w, text_w, row_h) = (170.0, 260.0, 450.0, 24.0);
        let (w, h) = (label_w + plot_w + text_w, row_h * c.dimensions.len() as f64 + 10.0);
        let mid = label_w + plot_w / 2.0;
        let mut svg = svg_open(w, h, &format!("deltas {} → {}", c.a, c.b));
        let _ = write!(svg, "<line class=\"zero\" x1=\"{mid}\" x2=\"{mid}\" y1=\"0\" y2=\"{h}\"/>");
        let mut marks = 0;
        for (row, d) in c.dimensions.iter().enumerate() {
            let cy = row_h * row as f64 + row_h / 2.0 + 4.0;
            let _ = write!(svg, "<text class=\"label\" x=\"4\" y=\"{:.1}\">{}</text>", cy + 4.0, d.dimension.label());
            let class = d.verdict.as_str();
            if let Some(delta) = d.delta {
                let half = [Some(delta.abs()), d.interval.map(|i| i.0.abs()), d.interval.map(|i| i.1.abs()), Some(d.margin)]
                    .into_iter()
                    .flatten()
                    .fold(0.0, f64::max);
                let sc = Scale::new((-half * 1.1, half * 1.1), label_w + 6.0, label_w + plot_w - 6.0);
                let _ = write!(
                    svg,
                    "<rect class=\"margin\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{} margin ±{}</title></rect>",
                    sc.at(-d.margin),
                    cy - row_h / 2.0 + 2.0,
                    sc.at(d.margin) - sc.at(-d.margin),
                    row_h - 4.0,
                    d.dimension.label(),
                    num(d.margin)
                );
                if let Some((lo, hi)) = d.interval {
                    let _ = write!(svg, "<line class=\"ci {class}\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{cy:.1}\" y2=\"{cy:.1}\"/>", sc.at(lo), sc.at(hi));
                }
                let _ = write!(svg, "<circle class=\"{class}\" cx=\"{:.1}\" cy=\"{cy:.1}\" r=\"4\"><title>{}: {}</title></circle>", sc.at(delta), d.dimension.label(), signed(delta));
                marks += 1;
            }
            let iv = d.interval.map(|(lo, hi)| format!(" [{}, {}]", signed(lo), signed(hi))).unwrap_or_default();
            let text = format!("{} → {}: Δ {}{iv}", d.a.map(num).unwrap_or("—".into()), d.b.map(num).unwrap_or("—".into()), d.delta.map(signed).unwrap_or("—".into()));
            let _ = write!(
                svg,
                "<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\">{}</text><text class=\"verdict {class}\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                label_w + plot_w + 8.0,
                cy + 4.0,
                esc(&text),
                w - 4.0,
                cy + 4.0,
                match d.verdict {
                    Verdict::Inconclusive { settle } if settle.is_finite() => format!("inconclusive (~{settle:.1}× images)"),
                    v => v.as_str().to_string(),
                }
            );
        }
        svg += "</svg>";
        if marks > 0 {
            s += &svg;
        } else {
            s += "<p class=\"absent\">No dimension was measured in both runs.</p>";
        }
        s += "</div>";
    }
    s + "</section>"
}

/// A legend of runs: a short line in each run's style.
fn run_legend(rep: &Report, st: &[Style], which: &[usize]) -> String {
    let mut s = String::from("<p class=\"keys\">");
    for &i in which {
        let _ = write!(
            s,
            "<span class=\"key\"><svg width=\"26\" height=\"10\"><line x1=\"1\" x2=\"25\" y1=\"5\" y2=\"5\" stroke-width=\"2.5\" {}/></svg>{}</span>",
            st[i].stroke(),
            esc(&run_label(&rep.runs[i]))
        );
    }
    s + "</p>"
}

fn corruption_curves(rep: &Report, st: &[Style]) -> String {
    let mut s = String::from(
        "<section class=\"box\"><h2>Corruptions × severities</h2><p class=\"legend\">Top-1 accuracy on each ImageNet-C corruption \
         at severities 1–5 (the parts <code>corruption_&lt;name&gt;_&lt;s&gt;_accuracy</code>); hover a point for the accuracy \
         relative to clean, which is what corruption robustness averages.</p>",
    );
    let cell = |i: usize, name: &str, sev: usize, what: &str| rep.results[i].parts.get(&format!("corruption_{name}_{sev}_{what}")).copied();
    let with: Vec<usize> = (0..rep.runs.len()).filter(|&i| CORRUPTIONS.iter().any(|c| (1..=5).any(|sv| cell(i, c, sv, "accuracy").is_some()))).collect();
    if with.is_empty() {
        return s + "<p class=\"absent\">No run has corruption records (probe set <code>corruption</code> not run).</p></section>";
    }
    s += &run_legend(rep, st, &with);
    s += "<div class=\"panels\">";
    let (w, h) = (200.0, 150.0);
    let x = Scale::new((0.7, 5.3), 40.0, w - 8.0);
    let y = Scale::new((0.0, 1.0), h - 32.0, 8.0);
    for name in CORRUPTIONS {
        let mut svg = svg_open(w, h, &format!("accuracy under {name}"));
        axes(&mut svg, &x, &y, "severity", "accuracy");
        let mut marks = 0;
        for &i in &with {
            let pts: Vec<(usize, f64)> = (1..=5).filter_map(|sv| cell(i, name, sv, "accuracy").map(|a| (sv, a))).collect();
            if pts.is_empty() {
                continue;
            }
            let d: String = pts.iter().enumerate().map(|(j, (sv, a))| format!("{}{:.1},{:.1}", if j == 0 { "M" } else { "L" }, x.at(*sv as f64), y.at(*a))).collect();
            let _ = write!(svg, "<path class=\"series\" d=\"{d}\" fill=\"none\" stroke-width=\"1.6\" {}/>", st[i].stroke());
            for (sv, a) in &pts {
                let rel = cell(i, name, *sv, "relative").map(|r| format!(", {} of clean", num(r))).unwrap_or_default();
                let _ = write!(
                    svg,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.2\" fill=\"{}\"><title>{} · severity {sv}: accuracy {}{rel}</title></circle>",
                    x.at(*sv as f64),
                    y.at(*a),
                    st[i].colour,
                    esc(&run_label(&rep.runs[i])),
                    num(*a)
                );
            }
            marks += 1;
        }
        svg += "</svg>";
        if marks > 0 {
            let _ = write!(s, "<figure>{svg}<figcaption>{}</figcaption></figure>", name.replace('_', " "));
        }
    }
    s + "</div></section>"
}

fn reliability(rep: &Report, st: &[Style]) -> Result<String> {
    let mut s = String::from(
        "<section class=\"box\"><h2>Calibration: reliability diagrams</h2><p class=\"legend\">Clean set, top-1 confidence in the 15 \
         equal-width bins of ECE (<code>metrics::reliability_bins</code>, the very bins the reported ECE sums over). Bars: accuracy \
         per bin; the diagonal is perfect calibration; the bar's shade grows with the bin's share of images. Bars below the diagonal: \
         over-confident. Hover a bar for its counts.</p><div class=\"panels\">",
    );
    let (w, h) = (230.0, 220.0);
    let x = Scale::new((0.0, 1.0), 42.0, w - 10.0);
    let y = Scale::new((0.0, 1.0), h - 34.0, 8.0);
    let mut drawn = 0;
    for (i, run) in rep.runs.iter().enumerate() {
        let Some(bins) = report::reliability(run)? else { continue };
        let n: usize = bins.iter().map(|b| b.count).sum();
        let mut svg = svg_open(w, h, &format!("reliability of {}", run_label(run)));
        axes(&mut svg, &x, &y, "confidence", "accuracy");
        let _ = write!(svg, "<line class=\"diag\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>", x.at(0.0), y.at(0.0), x.at(1.0), y.at(1.0));
        for b in bins.iter().filter(|b| b.count > 0) {
            let ReliabilityBin { lower, upper, count, confidence, accuracy } = b;
            let share = *count as f64 / n as f64;
            let _ = write!(
                svg,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\" fill-opacity=\"{:.2}\" stroke=\"{}\"><title>({}, {}]: {count} images, accuracy {}, mean confidence {}</title></rect>",
                x.at(*lower) + 0.5,
                y.at(*accuracy),
                x.at(*upper) - x.at(*lower) - 1.0,
                y.at(0.0) - y.at(*accuracy),
                st[i].colour,
                0.25 + 0.75 * share.sqrt(),
                st[i].colour,
                num(*lower),
                num(*upper),
                num(*accuracy),
                num(*confidence)
            );
        }
        svg += "</svg>";
        let ece = rep.results[i].parts.get("ece").map(|e| format!(" · ECE {}", num(*e))).unwrap_or_default();
        let _ = write!(s, "<figure>{svg}<figcaption>{}{ece}</figcaption></figure>", esc(&run_label(run)));
        drawn += 1;
    }
    if drawn == 0 {
        s += "<p class=\"absent\">No run has clean records.</p>";
    }
    Ok(s + "</div></section>")
}

fn cue_conflict(rep: &Report) -> Result<String> {
    let mut s = String::from(
        "<section class=\"box\"><h2>Shape vs texture, per category</h2><p class=\"legend\">Cue-conflict images (shape of one category, \
         texture of another), grouped by their shape category: the share of decisions for the shape (blue) and for the texture \
         (orange); the rest chose neither. Shape bias is shape / (shape + texture) over all categories.</p><div class=\"panels\">",
    );
    let mut drawn = 0;
    for (i, run) in rep.runs.iter().enumerate() {
        let cats: Vec<CueCategory> = report::cue_conflict_by_category(run);
        if cats.iter().all(|c| c.kept == 0) {
            continue;
        }
        let (label_w, bar_w, row_h) = (92.0, 180.0, 15.0);
        let (w, h) = (label_w + bar_w + 12.0, row_h * cats.len() as f64 + 24.0);
        let mut svg = svg_open(w, h, &format!("shape and texture decisions of {}", run_label(run)));
        for (r, c) in cats.iter().enumerate() {
            let y = 4.0 + r as f64 * row_h;
            let _ = write!(svg, "<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>", label_w - 4.0, y + 10.0, esc(&c.category));
            let _ = write!(svg, "<rect class=\"track\" x=\"{label_w}\" y=\"{y:.1}\" width=\"{bar_w}\" height=\"{:.1}\"/>", row_h - 3.0);
            if c.kept == 0 {
                continue;
            }
            let (sf, tf) = (c.shape_hits as f64 / c.kept as f64, c.texture_hits as f64 / c.kept as f64);
            let tip = format!("{}: {} shape, {} texture of {} images", c.category, c.shape_hits, c.texture_hits, c.kept);
            let _ = write!(
                svg,
                "<rect class=\"shape\" x=\"{label_w}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{}</title></rect><rect class=\"texture\" x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{}</title></rect>",
                bar_w * sf,
                row_h - 3.0,
                esc(&tip),
                label_w + bar_w * sf,
                bar_w * tf,
                row_h - 3.0,
                esc(&tip)
            );
        }
        svg += "</svg>";
        let bias = rep.results[i].values[Dimension::ShapeBias.index()].map(|b| format!(" · shape bias {}", num(b))).unwrap_or_default();
        let _ = write!(s, "<figure>{svg}<figcaption>{}{bias}</figcaption></figure>", esc(&run_label(run)));
        drawn += 1;
    }
    if drawn == 0 {
        s += "<p class=\"absent\">No run has cue-conflict records with texture categories (probe set <code>cue-conflict</code> not run).</p>";
    }
    Ok(s + "</div></section>")
}

fn protocol(rep: &Report) -> String {
    let mut s = String::from("<section class=\"box\"><h2>Protocol</h2><table class=\"facts\"><thead><tr><th>run</th><th>pipeline</th><th>adversarial</th><th>corruptions</th><th>subset</th><th>target · backend</th><th>tool · seed</th><th>dataset</th></tr></thead><tbody>");
    let or_dash = |v: &str| if v.is_empty() { "—".to_string() } else { esc(v) };
    for run in &rep.runs {
        let h = &run.header;
        let p = &h.pipeline;
        let pipeline = format!(
            "resize {} · crop {} · {:?} · mean {:?} · std {:?} · decoder {}",
            p.resize_shorter,
            p.crop,
            p.interpolation,
            p.mean,
            p.std,
            h.decoder
        )
        .to_lowercase();
        let pipeline = match h.outputs {
            Outputs::Logits => pipeline,
            Outputs::SoftmaxInGraph => format!("{pipeline} · output: probabilities (graph ends in softmax)"),
            Outputs::RowsSumToOne => format!("{pipeline} · output: probabilities (rows sum to 1)"),
        };
        let adversarial = if h.adversarial_mode.is_empty() { "—".into() } else { format!("{} mode · gradient {}", esc(&h.adversarial_mode), or_dash(&h.gradient)) };
        let subset = format!("{} per class · {} samples", h.per_class.map(|n| n.to_string()).unwrap_or("all".into()), h.samples);
        let fp = &h.dataset_fingerprint;
        let e = &h.execution;
        // A classifier head left in float is hundredths of a percent: not "0%".
        let percent = |x: f64| if x < 0.01 { format!("{:.2}%", 100.0 * x) } else { format!("{:.0}%", 100.0 * x) };
        let shares = [(e.quba_int8, "quba int8"), (e.tract_int8, "tract int8"), (e.float_fallback, "float fallback"), (e.float, "float")];
        let shares: Vec<String> = shares.iter().filter(|(m, _)| *m > 0).map(|(m, what)| format!("{} {what}", percent(e.share(*m)))).collect();
        let ran = if shares.is_empty() { String::new() } else { format!("<br>MACs: {}", shares.join(" · ")) };
        let _ = write!(
            s,
            "<tr><td>{}<br><span class=\"ci\">{}</span></td><td>{}</td><td>{adversarial}</td><td>{}</td><td>{subset}</td><td>{} · {}{ran}</td><td>{} · seed {}<br>protocol {}</td><td><span title=\"{}\">{}…</span><br>{}</td></tr>",
            esc(&run_label(run)),
            esc(&h.run_id),
            esc(&pipeline),
            or_dash(&h.corruption_source),
            esc(&h.target),
            h.backend.as_str(),
            esc(&h.tool_version),
            h.seed,
            h.protocol,
            esc(fp),
            esc(&fp.chars().take(12).collect::<String>()),
            esc(&h.benchmark)
        );
    }
    let weights: Vec<String> = rep.weights.0.iter().map(|w| num(*w)).collect();
    let _ = write!(s, "</tbody></table><p class=\"meta\">weights {} (PROTOCOL order)</p></section>", weights.join(", "));
    s
}

const CSS: &str = r#"
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1a1a1a;background:#fff;margin:0 auto;max-width:1240px;padding:16px}
h1{margin:0 0 4px}h2{font-size:18px;margin:0 0 6px}h3{font-size:15px;margin:10px 0 4px}
.meta{color:#555;margin:2px 0 8px}.legend{color:#444;font-size:13px;max-width:950px}.notes{color:#8a4b00;font-size:13px}
.box{border-top:1px solid #ddd;padding:12px 0}.chart-box,figure,table{break-inside:avoid;page-break-inside:avoid}
.panels{display:flex;flex-wrap:wrap;gap:6px 14px}figure{margin:0}figcaption{font-size:12px;text-align:center;color:#333;max-width:260px}
table{border-collapse:collapse;font-size:12px}th,td{border-bottom:1px solid #e4e4e4;padding:3px 6px;text-align:right;vertical-align:top}
th{background:#f4f4f4}td:nth-child(2),th:nth-child(2),.facts td,.facts th{text-align:left}.rank td.q{font-weight:600}
.ci{color:#777;font-size:11px}.na{color:#aaa}.absent{color:#777;font-style:italic}
svg text{font-family:inherit}.tick{font-size:10px;fill:#444}.label{font-size:12px;fill:#222}.axis-label{font-size:11px;fill:#333}
.frame{fill:none;stroke:#888}line.grid{stroke:#eee}.ring{fill:none;stroke:#ddd}.ring0{fill:none;stroke:#999;stroke-width:1.5}
.diag{stroke:#999;stroke-dasharray:4 3}.zero{stroke:#999}.series{stroke-width:2}
circle.study{fill:#bbb;fill-opacity:.6}line.ci{stroke-width:3}
.equal{fill:#2b7a3d;stroke:#2b7a3d}.differs{fill:#c0392b;stroke:#c0392b}.unknown{fill:#999;stroke:#999}.inconclusive{fill:#b7791f;stroke:#b7791f}rect.margin{fill:#2b7a3d;fill-opacity:.12;stroke:none}.verdict{font-size:12px;font-weight:600;stroke:none}
.track{fill:#f0f0f0}.shape{fill:#0072B2}.texture{fill:#E69F00}
.keys{font-size:12px}.key{margin-right:14px;white-space:nowrap}.key svg{vertical-align:middle;margin-right:4px}
@media print{body{max-width:none;padding:0;font-size:11px}.noprint{display:none}.box{break-inside:auto}h2{break-after:avoid}@page{margin:12mm}}
"#;

/// Moves the scatter's points and redraws its axes for the chosen pair; the
/// layout numbers come from the page (`scatter-frame`), not from here.
const JS: &str = r#"
(function(){
var el=document.getElementById('scatter-data');if(!el)return;
var D=JSON.parse(el.textContent),F=JSON.parse(document.getElementById('scatter-frame').textContent);
var L=F[2],R=F[3],T=F[4],B=F[5],NS='http://www.w3.org/2000/svg';
function range(k){var lo=Infinity,hi=-Infinity;D.models.concat(D.study).forEach(function(p){var v=p[1][k];if(v!==null){lo=Math.min(lo,v);hi=Math.max(hi,v);}});
 if(lo>hi)return null;var m=(hi-lo)*0.05;lo-=m;hi+=m;if(!(hi>lo)){lo-=0.5*Math.max(Math.abs(lo),1e-3);hi+=0.5*Math.max(Math.abs(hi),1e-3);}return[lo,hi];}
function ticks(r){var s=r[1]-r[0],mag=Math.pow(10,Math.floor(Math.log10(s/5))),st=[1,2,5,10].map(function(m){return m*mag;}).find(function(x){return s/x<=6;})||10*mag;
 var dec=Math.max(0,-Math.floor(Math.log10(st))),out=[];for(var t=Math.ceil(r[0]/st)*st;t<=r[1]+st*1e-9;t+=st){var v=Math.abs(t)<st*1e-9?0:t;out.push([v,v.toFixed(dec)]);}return out;}
function el2(n,a,txt){var e=document.createElementNS(NS,n);for(var k in a)e.setAttribute(k,a[k]);if(txt!==undefined)e.textContent=txt;return e;}
function draw(){var kx=+document.getElementById('sx').value,ky=+document.getElementById('sy').value,rx=range(kx),ry=range(ky);if(!rx||!ry)return;
 var X=function(v){return L+(v-rx[0])/(rx[1]-rx[0])*(R-L);},Y=function(v){return B+(v-ry[0])/(ry[1]-ry[0])*(T-B);};
 var g=document.getElementById('scatter-axes');while(g.firstChild)g.removeChild(g.firstChild);
 g.appendChild(el2('path',{'class':'frame',d:'M'+L+','+T+'V'+B+'H'+R}));
 ticks(rx).forEach(function(t){g.appendChild(el2('line',{'class':'grid',x1:X(t[0]),x2:X(t[0]),y1:T,y2:B}));g.appendChild(el2('text',{'class':'tick',x:X(t[0]),y:B+12,'text-anchor':'middle'},t[1]));});
 ticks(ry).forEach(function(t){g.appendChild(el2('line',{'class':'grid',x1:L,x2:R,y1:Y(t[0]),y2:Y(t[0])}));g.appendChild(el2('text',{'class':'tick',x:L-4,y:Y(t[0])+3,'text-anchor':'end'},t[1]));});
 g.appendChild(el2('text',{'class':'axis-label',x:(L+R)/2,y:B+26,'text-anchor':'middle'},D.labels[kx]));
 g.appendChild(el2('text',{'class':'axis-label',transform:'translate('+(L-34)+','+((T+B)/2)+') rotate(-90)','text-anchor':'middle'},D.labels[ky]));
 document.querySelectorAll('#scatter circle').forEach(function(c){var p=(c.getAttribute('class')==='study'?D.study:D.models)[+c.getAttribute('data-i')][1];
  if(p[kx]===null||p[ky]===null){c.setAttribute('display','none');}else{c.removeAttribute('display');c.setAttribute('cx',X(p[kx]));c.setAttribute('cy',Y(p[ky]));}});}
document.getElementById('sx').addEventListener('change',draw);document.getElementById('sy').addEventListener('change',draw);
draw();
})();
"#;

/// Writes `report.html` for a report.
pub fn write(rep: &Report, extras: &Extras, path: &std::path::Path) -> Result<()> {
    use anyhow::Context;
    let html = render(rep, extras)?;
    std::fs::write(path, html).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(esc("<b a=\"1\">&'</b>"), "&lt;b a=&quot;1&quot;&gt;&amp;&#39;&lt;/b&gt;");
    }

    #[test]
    fn four_significant_digits() {
        assert_eq!(num(0.0044799), "0.004480");
        assert_eq!(num(0.85), "0.8500");
        assert_eq!(num(55.28), "55.28");
        assert_eq!(num(-0.012345), "-0.01235");
        assert_eq!(num(f64::NAN), "—");
    }

    #[test]
    fn ticks_are_round_and_inside() {
        let t = Scale::new((0.0, 1.0), 0.0, 100.0).ticks();
        assert_eq!(t.iter().map(|x| x.1.as_str()).collect::<Vec<_>>(), ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let t = Scale::new((0.013, 0.097), 0.0, 1.0).ticks();
        assert!(t.iter().all(|v| (0.013..=0.097).contains(&v.0)) && t.len() >= 3, "{t:?}");
        assert_eq!(Scale::new((0.7, 5.3), 0.0, 1.0).ticks().iter().map(|x| x.1.as_str()).collect::<Vec<_>>(), ["1", "2", "3", "4", "5"]);
    }

    #[test]
    fn percentile_follows_the_direction() {
        let row = |v: f64| TableRow { id: String::new(), name: String::new(), values: [Some(v); 9] };
        let study = [row(1.0), row(2.0), row(3.0), row(4.0)];
        assert_eq!(percentile(Dimension::Accuracy, 3.0, &study), Some(62.5));
        assert_eq!(percentile(Dimension::CalibrationError, 3.0, &study), Some(37.5));
        assert_eq!(percentile(Dimension::Accuracy, 9.0, &study), Some(100.0));
    }
}
