//! `QLinearConv` as tract sees it: an ONNX parser entry whose expansion wires
//! quba's integer convolution when the node's quantisation parameters are
//! constants it supports, and tract's own `QLinearConv` otherwise, so a model
//! either runs faster or exactly as before, never fails for our sake.

use std::sync::Arc;

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::cnn::Conv as HirConv;
use tract_onnx::tract_hir::tract_core::ops::cnn::conv::KernelFormat;
use tract_onnx::tract_hir::tract_core::ops::cnn::PaddingSpec;
use tract_onnx::tract_hir::tract_core::ops::nn::DataFormat;

use super::kernels::{Code, Geometry, QConv, Requant};

/// The `QLinearConv` input slots, as ONNX numbers them.
const X: usize = 0;
const X_SCALE: usize = 1;
const X_ZP: usize = 2;
const W: usize = 3;
const W_SCALE: usize = 4;
const W_ZP: usize = 5;
const Y_SCALE: usize = 6;
const Y_ZP: usize = 7;
const BIAS: usize = 8;

/// The parser registered for `QLinearConv` (see `super::onnx`).
pub fn qlinear_conv(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let mut hir = HirConv::default().padding(padding(node)?);
    if let Some(k) = node.get_attr_opt_tvec("kernel_shape")? {
        hir = hir.kernel_shape(k);
    }
    if let Some(g) = node.get_attr_opt("group")? {
        hir = hir.group(g);
    }
    if let Some(d) = node.get_attr_opt_tvec("dilations")? {
        hir = hir.dilations(d);
    }
    if let Some(s) = node.get_attr_opt_tvec("strides")? {
        hir = hir.strides(s);
    }
    hir.x_scale_input = Some(X_SCALE);
    hir.x_zero_point_input = Some(X_ZP);
    hir.k_input = Some(W);
    hir.k_scale_input = Some(W_SCALE);
    hir.k_zero_point_input = Some(W_ZP);
    hir.y_scale_input = Some(Y_SCALE);
    hir.y_zero_point_input = Some(Y_ZP);
    if node.input.len() > BIAS && !node.input[BIAS].is_empty() {
        hir.bias_input = Some(BIAS);
    }
    Ok((expand(IntegerQLinearConv { hir }), vec![]))
}

/// ONNX `pads` / `auto_pad`, as tract's own Conv parser reads them.
fn padding(node: &NodeProto) -> TractResult<PaddingSpec> {
    if let Some(pads) = node.get_attr_opt_tvec::<usize>("pads")? {
        let half = pads.len() / 2;
        return Ok(PaddingSpec::Explicit(pads[..half].into(), pads[half..].into()));
    }
    Ok(match node.get_attr_opt::<&str>("auto_pad")?.unwrap_or("NOTSET") {
        "VALID" => PaddingSpec::Valid,
        "SAME_UPPER" => PaddingSpec::SameUpper,
        "SAME_LOWER" => PaddingSpec::SameLower,
        "NOTSET" => match node.get_attr_opt_tvec::<usize>("kernel_shape")? {
            Some(k) => PaddingSpec::Explicit(tvec![0; k.len()], tvec![0; k.len()]),
            None => PaddingSpec::Valid,
        },
        other => bail!("QLinearConv {}: unknown auto_pad {other:?}", node.name),
    })
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct IntegerQLinearConv {
    hir: HirConv,
}

impl Expansion for IntegerQLinearConv {
    fn name(&self) -> StaticName {
        "QLinearConv".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        self.hir.rules(s, inputs, outputs)
    }

    fn wire(&self, prefix: &str, target: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        match self.integer_op(target, inputs)? {
            Some(op) => target.wire_node(prefix, op, &[inputs[X]]),
            None => self.hir.wire(prefix, target, inputs),
        }
    }
}

impl IntegerQLinearConv {
    /// The integer op for this node, or `None` where tract's path must run:
    /// non-constant parameters, a non-2-D or non-NCHW layout, or input and
    /// output codes of different types.
    fn integer_op(&self, target: &TypedModel, inputs: &[OutletId]) -> TractResult<Option<QConvOp>> {
        if self.hir.data_format != DataFormat::NCHW || self.hir.kernel_fmt != KernelFormat::OIHW {
            return Ok(None);
        }
        let x = target.outlet_fact(inputs[X])?;
        let konst = |slot: usize| -> TractResult<Option<Arc<Tensor>>> {
            Ok(match inputs.get(slot) {
                Some(&o) => target.outlet_fact(o)?.konst.clone(),
                None => None,
            })
        };
        let (Some(xs), Some(xz), Some(w), Some(ws), Some(wz), Some(ys), Some(yz)) =
            (konst(X_SCALE)?, konst(X_ZP)?, konst(W)?, konst(W_SCALE)?, konst(W_ZP)?, konst(Y_SCALE)?, konst(Y_ZP)?)
        else {
            return Ok(None);
        };
        let bias = match self.hir.bias_input {
            Some(slot) => match konst(slot)? {
                Some(b) if b.datum_type() == i32::datum_type() => Some(b),
                _ => return Ok(None),
            },
            None => None,
        };
        let code = x.datum_type.unquantized();
        if (code != u8::datum_type() && code != i8::datum_type()) || yz.datum_type().unquantized() != code {
            return Ok(None);
        }
        let Some(shape) = x.shape.as_concrete() else { return Ok(None) };
        let [batch, cin, h, wd] = *shape else { return Ok(None) };
        let [cout, cin_g, kh, kw] = *w.shape() else { return Ok(None) };
        let group = self.hir.group.unwrap_or(1);
        if cin_g * group != cin || cout % group != 0 || xs.len() != 1 || xz.len() != 1 || ys.len() != 1 || yz.len() != 1 {
            return Ok(None);
        }
        if ![1, cout].contains(&ws.len()) || ![1, cout].contains(&wz.len()) || bias.as_ref().is_some_and(|b| b.len() != cout) {
            return Ok(None);
        }
        let ones = tvec![1usize; 2];
        let dilations = self.hir.dilations.clone().unwrap_or_else(|| ones.clone());
        let strides = self.hir.strides.clone().unwrap_or(ones);
        let padded = self.hir.padding.compute(&[h, wd], &[kh, kw], &dilations, &strides);
        let geo = Geometry {
            groups: group,
            cin_g,
            cout_g: cout / group,
            kh,
            kw,
            sh: strides[0],
            sw: strides[1],
            dh: dilations[0],
            dw: dilations[1],
            pad_t: padded[0].pad_before,
            pad_l: padded[1].pad_before,
            h,
            w: wd,
            ho: padded[0].convoluted,
            wo: padded[1].convoluted,
        };
        let per_channel = |t: &Tensor| -> TractResult<Vec<i32>> {
            let v: Vec<i32> = t.cast_to::<i32>()?.try_as_plain_ram()?.as_slice::<i32>()?.to_vec();
            Ok(if v.len() == 1 { vec![v[0]; cout] } else { v })
        };
        let w_zp = per_channel(&wz)?;
        let w_codes = w.cast_to::<i32>()?;
        let w_codes = w_codes.try_as_plain_ram()?.as_slice::<i32>()?;
        let per_out = w_codes.len() / cout;
        let weights: Vec<i32> = w_codes.iter().enumerate().map(|(i, &v)| v - w_zp[i / per_out]).collect();
        let scalar = |t: &Tensor| -> TractResult<f32> { Ok(t.cast_to::<f32>()?.try_as_plain_ram()?.as_slice::<f32>()?[0]) };
        let (x_scale, y_scale) = (scalar(&xs)?, scalar(&ys)?);
        let w_scale = ws.cast_to::<f32>()?.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        // onnxruntime's order of operations, so each multiplier has the same bits.
        let mult = (0..cout).map(|c| x_scale * w_scale[if w_scale.len() == 1 { 0 } else { c }] / y_scale).collect();
        let bias = match bias {
            Some(b) => b.try_as_plain_ram()?.as_slice::<i32>()?.to_vec(),
            None => vec![0; cout],
        };
        let x_zp = per_channel(&xz)?[0];
        let y_zp = per_channel(&yz)?[0];
        let conv = QConv::new(geo, &weights, x_zp, Requant { bias, mult, zero_point: y_zp });
        Ok(Some(QConvOp { conv: Arc::new(conv), code, batch }))
    }
}

/// The typed op tract plans and runs.
#[derive(Debug, Clone)]
pub struct QConvOp {
    pub conv: Arc<QConv>,
    code: DatumType,
    batch: usize,
}

// Equal when they share the prepared weights: two convolutions with equal
// weights loaded separately are different nodes, and comparing megabytes of
// weights to find out would buy nothing.
impl PartialEq for QConvOp {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.conv, &other.conv) && self.code == other.code && self.batch == other.batch
    }
}
impl Eq for QConvOp {}

impl Op for QConvOp {
    fn name(&self) -> StaticName {
        "QubaQConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.conv.geo;
        Ok(vec![format!(
            "{}: {}→{} channels, {}×{} stride {}×{}, groups {}",
            self.conv.kernel_name(),
            g.cin(),
            g.cout(),
            g.kh,
            g.kw,
            g.sh,
            g.sw,
            g.groups
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for QConvOp {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let g = &self.conv.geo;
        let batch = x.shape()[0];
        let shape = [batch, g.cout(), g.ho, g.wo];
        fn run<T: Code + Datum>(conv: &QConv, x: &Tensor, batch: usize, shape: [usize; 4]) -> TractResult<Tensor> {
            let x = x.try_as_plain_ram()?;
            let x = x.as_slice::<T>()?;
            let mut out = vec![T::narrow(0); shape.iter().product()];
            conv.run(x, batch, &mut out);
            Ok(tract_ndarray::Array4::from_shape_vec(shape, out)?.into_tensor())
        }
        let out = if self.code == u8::datum_type() {
            run::<u8>(&self.conv, x, batch, shape)?
        } else {
            run::<i8>(&self.conv, x, batch, shape)?
        };
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for QConvOp {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let g = &self.conv.geo;
        let n = inputs[0].shape[0].clone();
        Ok(tvec!(self.code.fact([n, g.cout().to_dim(), g.ho.to_dim(), g.wo.to_dim()])))
    }
}
