//! Build-time evaluation of the integer subgraphs exporters write around
//! dynamic shapes: torch's tracer turns `x.shape[0]`, `F.pad`'s pad list or a
//! class token's `expand(n, -1, -1)` into Shape → Gather → Concat → Reshape
//! chains, and the data shapes behind them are only known once those chains
//! are evaluated. Values are `Dim`s so that the symbolic batch flows through
//! them exactly as it does through shapes.

use anyhow::{bail, Context, Result};
use tract_onnx::pb::{tensor_proto::DataType, NodeProto};

use super::graph::{attr, attr_i, attr_ints, decode_const, norm_axis, Dim, Facts};

/// An integer (or boolean, as 0/1) tensor known at build time, row-major.
#[derive(Clone, Debug)]
pub struct Value {
    pub shape: Vec<usize>,
    pub data: Vec<Dim>,
}

impl Value {
    pub fn fixed(&self) -> Option<Vec<i64>> {
        self.data.iter().map(|d| d.value()).collect()
    }
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The value of shape `shape` whose element at multi-index `ix` is `at(ix)`.
fn tabulate(shape: Vec<usize>, mut at: impl FnMut(&[usize]) -> Result<Dim>) -> Result<Value> {
    let n: usize = shape.iter().product();
    let st = strides(&shape);
    let mut ix = vec![0; shape.len()];
    let mut data = Vec::with_capacity(n);
    for flat in 0..n {
        for (i, s) in st.iter().enumerate() {
            ix[i] = flat / s % shape[i];
        }
        data.push(at(&ix)?);
    }
    Ok(Value { shape, data })
}

fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let at = |s: &[usize], i: usize| if i + s.len() >= r { s[i + s.len() - r] } else { 1 };
    (0..r)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y || y == 1 => Ok(x),
            (1, y) => Ok(y),
            (x, y) => bail!("cannot broadcast {x} with {y}"),
        })
        .collect()
}

/// Element of `v` that broadcasts to output multi-index `ix`.
fn broadcast_at(v: &Value, ix: &[usize]) -> Dim {
    let lead = ix.len() - v.shape.len();
    let st = strides(&v.shape);
    let flat: usize = (0..v.shape.len()).map(|i| if v.shape[i] == 1 { 0 } else { ix[lead + i] * st[i] }).sum();
    v.data[flat]
}

fn elementwise(vs: &[&Value], f: impl Fn(&[Dim]) -> Option<Dim>) -> Result<Value> {
    let mut shape = vec![];
    for v in vs {
        shape = broadcast_shape(&shape, &v.shape)?;
    }
    tabulate(shape, |ix| {
        let args: Vec<Dim> = vs.iter().map(|v| broadcast_at(v, ix)).collect();
        f(&args).with_context(|| format!("cannot evaluate on {args:?} with a symbolic batch"))
    })
}

fn truth(b: bool) -> Dim {
    Dim::fixed(b as i64)
}

/// `Some(true)` when the batch-valued `a` is surely below `b` (N ≥ 1).
fn less(a: Dim, b: Dim) -> Option<bool> {
    match (a.value(), b.value()) {
        (Some(x), Some(y)) => Some(x < y),
        _ if a == b => Some(false),
        (Some(x), None) if b.k > 0 && x < b.k => Some(true),
        (None, Some(y)) if a.k > 0 && y <= a.k => Some(false),
        _ => None,
    }
}

fn equal(a: Dim, b: Dim) -> Option<bool> {
    if a == b {
        return Some(true);
    }
    match (less(a, b), less(b, a)) {
        (Some(true), _) | (_, Some(true)) => Some(false),
        (Some(false), Some(false)) => Some(true),
        _ => None,
    }
}

/// One normalised Slice axis: `count` elements from `start` by `step`.
#[derive(Clone, Copy, Debug)]
pub struct SliceAxis {
    pub axis: usize,
    pub start: i64,
    pub step: i64,
    pub count: i64,
}

/// Slice's starts/ends/axes/steps resolved against `shape` as ONNX defines
/// them (negative indices count from the end; out-of-range ones are clamped).
/// An axis of batch size may only be taken whole.
pub fn slice_axes(node: &NodeProto, f: &Facts, shape: &[Dim]) -> Result<Vec<SliceAxis>> {
    let input = |i: usize| node.input.get(i).filter(|n| !n.is_empty());
    let starts = f.ints(input(1).context("Slice without starts")?, node)?.to_vec();
    let ends = f.ints(input(2).context("Slice without ends")?, node)?.to_vec();
    let axes = match input(3) {
        Some(a) => f.ints(a, node)?.to_vec(),
        None => (0..starts.len() as i64).collect(),
    };
    let steps = match input(4) {
        Some(s) => f.ints(s, node)?.to_vec(),
        None => vec![1; starts.len()],
    };
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        bail!("starts, ends, axes and steps differ in length");
    }
    let mut out = vec![];
    for i in 0..starts.len() {
        let axis = norm_axis(axes[i], shape.len())?;
        let (s, e, step) = (starts[i], ends[i], steps[i]);
        if step == 0 {
            bail!("Slice step 0");
        }
        let Some(d) = shape[axis].value() else {
            if s == 0 && step == 1 && e >= i32::MAX as i64 {
                continue;
            }
            bail!("Slice along the batch-sized axis {axis} is not supported (only whole)");
        };
        let wrap = |v: i64| if v < 0 { v + d } else { v };
        let (start, end) = if step > 0 {
            (wrap(s).clamp(0, d), wrap(e).clamp(0, d))
        } else {
            (wrap(s).clamp(0, d - 1), wrap(e).clamp(-1, d - 1))
        };
        let span = if step > 0 { end - start } else { start - end };
        let count = if span <= 0 { 0 } else { (span + step.abs() - 1) / step.abs() };
        out.push(SliceAxis { axis, start, step, count });
    }
    Ok(out)
}

/// Pad's (begin, end) per axis; the `axes` input (opset 18) may name a subset.
pub fn pad_amounts(node: &NodeProto, f: &Facts, rank: usize) -> Result<Vec<(i64, i64)>> {
    let pads = match node.input.get(1).filter(|n| !n.is_empty()) {
        Some(p) => f.ints(p, node)?.to_vec(),
        None => attr_ints(node, "pads").context("Pad without pads")?,
    };
    let axes: Vec<usize> = match node.input.get(3).filter(|n| !n.is_empty()) {
        Some(a) => f.ints(a, node)?.iter().map(|&a| norm_axis(a, rank)).collect::<Result<_>>()?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        bail!("{} pads for {} axes", pads.len(), axes.len());
    }
    let mut out = vec![(0, 0); rank];
    for (i, &a) in axes.iter().enumerate() {
        out[a] = (pads[i], pads[i + axes.len()]);
    }
    Ok(out)
}

/// Split's piece lengths along `axis` of length `d`.
pub fn split_sizes(node: &NodeProto, f: &Facts, d: i64) -> Result<Vec<i64>> {
    if let Some(s) = node.input.get(1).filter(|n| !n.is_empty()) {
        return Ok(f.ints(s, node)?.to_vec());
    }
    if let Some(s) = attr_ints(node, "split") {
        return Ok(s);
    }
    let n = attr_i(node, "num_outputs", node.output.len() as i64);
    let chunk = (d + n - 1) / n;
    Ok((0..n).map(|i| chunk.min(d - i * chunk).max(0)).collect())
}

/// The values of `node`'s outputs, when all the inputs they need are known.
pub fn eval(node: &NodeProto, f: &Facts) -> Result<Option<Value>> {
    let val = |i: usize| node.input.get(i).filter(|n| !n.is_empty()).and_then(|n| f.values.get(n));
    let out_shape = || -> Option<Vec<usize>> {
        f.shapes.get(node.output.first()?)?.iter().map(|d| d.value().map(|v| v as usize)).collect()
    };
    let op = node.op_type.as_str();
    if op == "Shape" {
        let Some(s) = node.input.first().and_then(|n| f.shapes.get(n)) else { return Ok(None) };
        let r = s.len() as i64;
        let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let (a, b) = (clamp(attr_i(node, "start", 0)), clamp(attr_i(node, "end", r)));
        let data = s[a..b.max(a)].to_vec();
        return Ok(Some(Value { shape: vec![data.len()], data }));
    }
    if op == "Size" {
        let Some(s) = node.input.first().and_then(|n| f.shapes.get(n)) else { return Ok(None) };
        return Ok(Some(Value { shape: vec![], data: vec![super::graph::product(s)] }));
    }
    if op == "ConstantOfShape" {
        let fill = match attr(node, "value").and_then(|a| a.t.as_ref()) {
            None => Some(0),
            Some(t) => decode_const(t).ints.and_then(|v| v.first().copied()),
        };
        let (Some(fill), Some(shape)) = (fill, out_shape()) else { return Ok(None) };
        let n = shape.iter().product();
        return Ok(Some(Value { shape, data: vec![Dim::fixed(fill); n] }));
    }
    let n_in = node.input.iter().filter(|n| !n.is_empty()).count();
    let Some(x) = val(0) else { return Ok(None) };
    let v = match op {
        "Identity" | "Reshape" | "Squeeze" | "Unsqueeze" | "Flatten" => {
            let Some(shape) = out_shape() else { return Ok(None) };
            Value { shape, data: x.data.clone() }
        }
        "Cast" => {
            let to = DataType::try_from(attr_i(node, "to", 0) as i32).ok();
            match to {
                Some(DataType::Bool) => elementwise(&[x], |a| Some(truth(!equal(a[0], Dim::fixed(0))?)))?,
                Some(
                    DataType::Int64 | DataType::Int32 | DataType::Int16 | DataType::Int8 | DataType::Uint8
                    | DataType::Uint16 | DataType::Uint32 | DataType::Uint64,
                ) => x.clone(),
                // A float value is only ever a scale in these graphs; its shape is all the backward needs.
                _ => return Ok(None),
            }
        }
        "Gather" => {
            let Some(idx) = val(1).and_then(|v| v.fixed().map(|i| (v.shape.clone(), i))) else { return Ok(None) };
            let axis = norm_axis(attr_i(node, "axis", 0), x.shape.len())?;
            let d = x.shape[axis] as i64;
            let mut shape = x.shape[..axis].to_vec();
            shape.extend(&idx.0);
            shape.extend(&x.shape[axis + 1..]);
            let xs = strides(&x.shape);
            let r = idx.0.len();
            tabulate(shape, |ix| {
                let k = idx.1[strides(&idx.0).iter().zip(&ix[axis..axis + r]).map(|(s, i)| s * i).sum::<usize>()];
                let k = if k < 0 { k + d } else { k };
                if !(0..d).contains(&k) {
                    bail!("Gather index {k} out of range for {d}");
                }
                let mut flat = k as usize * xs[axis];
                for (i, s) in xs.iter().enumerate().take(axis) {
                    flat += ix[i] * s;
                }
                for (j, s) in xs.iter().enumerate().skip(axis + 1) {
                    flat += ix[j + r - 1] * s;
                }
                Ok(x.data[flat])
            })?
        }
        "Concat" => {
            let parts: Option<Vec<&Value>> = (0..node.input.len()).map(val).collect();
            let Some(parts) = parts else { return Ok(None) };
            let axis = norm_axis(attr_i(node, "axis", 0), x.shape.len())?;
            let outer: usize = x.shape[..axis].iter().product();
            let mut shape = x.shape.clone();
            shape[axis] = parts.iter().map(|p| p.shape[axis]).sum();
            let mut data = vec![];
            for o in 0..outer {
                for p in &parts {
                    let chunk: usize = p.shape[axis..].iter().product();
                    data.extend_from_slice(&p.data[o * chunk..(o + 1) * chunk]);
                }
            }
            Value { shape, data }
        }
        "Slice" => {
            let dims: Vec<Dim> = x.shape.iter().map(|&d| Dim::fixed(d as i64)).collect();
            let axes = slice_axes(node, f, &dims)?;
            let mut shape = x.shape.clone();
            for a in &axes {
                shape[a.axis] = a.count as usize;
            }
            let xs = strides(&x.shape);
            tabulate(shape, |ix| {
                let mut src = ix.to_vec();
                for a in &axes {
                    src[a.axis] = (a.start + ix[a.axis] as i64 * a.step) as usize;
                }
                Ok(x.data[src.iter().zip(&xs).map(|(i, s)| i * s).sum::<usize>()])
            })?
        }
        "Transpose" => {
            let perm = attr_ints(node, "perm").unwrap_or_else(|| (0..x.shape.len() as i64).rev().collect());
            let shape = perm.iter().map(|&p| x.shape[p as usize]).collect();
            let xs = strides(&x.shape);
            tabulate(shape, |ix| Ok(x.data[perm.iter().zip(ix).map(|(&p, i)| i * xs[p as usize]).sum::<usize>()]))?
        }
        "Expand" => {
            let Some(shape) = out_shape() else { return Ok(None) };
            tabulate(shape, |ix| Ok(broadcast_at(x, ix)))?
        }
        "Range" => {
            let (Some(s), Some(l), Some(d)) = (x.fixed(), val(1).and_then(Value::fixed), val(2).and_then(Value::fixed))
            else {
                return Ok(None);
            };
            let (s, l, d) = (s[0], l[0], d[0]);
            let n = if d == 0 { 0 } else { ((l - s) as f64 / d as f64).ceil().max(0.0) as i64 };
            Value { shape: vec![n as usize], data: (0..n).map(|i| Dim::fixed(s + i * d)).collect() }
        }
        "Not" => elementwise(&[x], |a| Some(truth(a[0] == Dim::fixed(0))))?,
        "Neg" => elementwise(&[x], |a| Some(Dim { k: -a[0].k, p: a[0].p }))?,
        _ if n_in >= 2 => {
            let parts: Option<Vec<&Value>> = (0..node.input.len()).map(val).collect();
            let Some(parts) = parts else { return Ok(None) };
            let fmod = attr_i(node, "fmod", 0) == 1;
            let f2 = |g: fn(Dim, Dim) -> Option<Dim>| move |a: &[Dim]| g(a[0], a[1]);
            match op {
                "Add" => elementwise(&parts, f2(|a, b| a.add(b)))?,
                "Sub" => elementwise(&parts, f2(|a, b| a.add(Dim { k: -b.k, p: b.p })))?,
                "Mul" => elementwise(&parts, f2(|a, b| Some(a.mul(b))))?,
                "Div" => elementwise(&parts, f2(|a, b| a.div_trunc(b)))?,
                // fmod = 0 is Python's %: the remainder takes the divisor's sign.
                "Mod" => elementwise(&parts, |a| {
                    let (x, y) = (a[0].value()?, a[1].value()?);
                    let r = x.checked_rem(y)?;
                    Some(Dim::fixed(if !fmod && r != 0 && (r < 0) != (y < 0) { r + y } else { r }))
                })?,
                "Equal" => elementwise(&parts, |a| Some(truth(equal(a[0], a[1])?)))?,
                "Less" => elementwise(&parts, |a| Some(truth(less(a[0], a[1])?)))?,
                "Greater" => elementwise(&parts, |a| Some(truth(less(a[1], a[0])?)))?,
                "LessOrEqual" => elementwise(&parts, |a| Some(truth(!less(a[1], a[0])?)))?,
                "GreaterOrEqual" => elementwise(&parts, |a| Some(truth(!less(a[0], a[1])?)))?,
                "And" => elementwise(&parts, |a| Some(truth(a[0] != Dim::fixed(0) && a[1] != Dim::fixed(0))))?,
                "Or" => elementwise(&parts, |a| Some(truth(a[0] != Dim::fixed(0) || a[1] != Dim::fixed(0))))?,
                "Where" => elementwise(&parts, |a| Some(if a[0] != Dim::fixed(0) { a[1] } else { a[2] }))?,
                "Min" => elementwise(&parts, |a| {
                    a.iter().try_fold(a[0], |m, &v| Some(if less(v, m)? { v } else { m }))
                })?,
                "Max" => elementwise(&parts, |a| {
                    a.iter().try_fold(a[0], |m, &v| Some(if less(m, v)? { v } else { m }))
                })?,
                _ => return Ok(None),
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(v))
}
