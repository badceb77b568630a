//! Shapes: each class's closed contours, their random pose, and the
//! scanline rasteriser that turns them into exact per-pixel coverage. Kept
//! apart because the coverage is all that the painters downstream need to
//! know of a shape.

use rand::RngCore;

use super::maths::{atan2, cos, sin, FRAC_PI_2, TAU};
use super::rng::uniform;
use super::CLASSES;

pub(super) type Pt = [f32; 2];

fn push_arc(out: &mut Vec<Pt>, cx: f32, cy: f32, r: f32, a0: f32, a1: f32, steps: usize) {
    for i in 0..=steps {
        let a = a0 + (a1 - a0) * (i as f32 / steps as f32);
        out.push([cx + r * cos(a), cy + r * sin(a)]);
    }
}

fn circle(r: f32, steps: usize) -> Vec<Pt> {
    let mut c = Vec::with_capacity(steps + 1);
    push_arc(&mut c, 0.0, 0.0, r, 0.0, TAU * (steps as f32 - 1.0) / steps as f32, steps - 1);
    c
}

fn regular(n: usize, r_outer: f32, r_inner: f32, start: f32) -> Vec<Pt> {
    // With r_inner == r_outer this is a plain regular n-gon.
    let m = if r_inner == r_outer { n } else { 2 * n };
    (0..m)
        .map(|i| {
            let r = if i % 2 == 1 && m == 2 * n { r_inner } else { r_outer };
            let a = start + TAU * i as f32 / m as f32;
            [r * cos(a), r * sin(a)]
        })
        .collect()
}

/// Closed contours of a class in its own units, filled with the even-odd
/// rule (so the ring's inner circle is a hole).
fn raw_contours(class: usize) -> Vec<Vec<Pt>> {
    let poly = |pts: &[Pt]| vec![pts.to_vec()];
    match CLASSES[class] {
        "arrow" => poly(&[[-1.0, -0.2], [0.1, -0.2], [0.1, -0.6], [1.0, 0.0], [0.1, 0.6], [0.1, 0.2], [-1.0, 0.2]]),
        "bowtie" => poly(&[[-1.0, -0.75], [0.0, -0.14], [1.0, -0.75], [1.0, 0.75], [0.0, 0.14], [-1.0, 0.75]]),
        "crescent" => {
            // Disc of radius 1 minus a disc of radius 0.8 shifted by d: the
            // outer arc goes the long way round between the two
            // intersection points, the inner arc returns inside the disc.
            let (d, r2) = (0.45f32, 0.8f32);
            let xi = (1.0 - r2 * r2 + d * d) / (2.0 * d);
            let yi = (1.0 - xi * xi).sqrt();
            let alpha = atan2(yi, xi);
            let beta = atan2(yi, xi - d);
            let mut c = Vec::new();
            push_arc(&mut c, 0.0, 0.0, 1.0, alpha, TAU - alpha, 40);
            push_arc(&mut c, d, 0.0, r2, TAU - beta, beta, 28);
            vec![c]
        }
        "cross" => poly(&[
            [-0.25, -0.9],
            [0.25, -0.9],
            [0.25, -0.25],
            [0.9, -0.25],
            [0.9, 0.25],
            [0.25, 0.25],
            [0.25, 0.9],
            [-0.25, 0.9],
            [-0.25, 0.25],
            [-0.9, 0.25],
            [-0.9, -0.25],
            [-0.25, -0.25],
        ]),
        "diamond" => poly(&[[-1.0, 0.0], [0.0, -0.55], [1.0, 0.0], [0.0, 0.55]]),
        "disc" => vec![circle(1.0, 64)],
        "heart" => {
            let mut c = Vec::with_capacity(64);
            for i in 0..64 {
                let t = TAU * i as f32 / 64.0;
                let s = sin(t);
                let y = 13.0 * cos(t) - 5.0 * cos(2.0 * t) - 2.0 * cos(3.0 * t) - cos(4.0 * t);
                c.push([16.0 * s * s * s, -y]);
            }
            vec![c]
        }
        "hexagon" => vec![regular(6, 1.0, 1.0, 0.0)],
        "house" => poly(&[[-0.6, 0.85], [0.6, 0.85], [0.6, 0.0], [0.95, 0.0], [0.0, -0.9], [-0.95, 0.0], [-0.6, 0.0]]),
        "lshape" => poly(&[[-0.6, -0.9], [-0.05, -0.9], [-0.05, 0.35], [0.75, 0.35], [0.75, 0.9], [-0.6, 0.9]]),
        "ring" => vec![circle(1.0, 64), circle(0.55, 48)],
        "square" => poly(&[[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]),
        "star" => vec![regular(5, 1.0, 0.42, -FRAC_PI_2)],
        "trapezoid" => poly(&[[-1.0, 0.55], [1.0, 0.55], [0.45, -0.55], [-0.45, -0.55]]),
        "triangle" => vec![regular(3, 1.0, 1.0, -FRAC_PI_2)],
        "tshape" => poly(&[
            [-0.9, -0.9],
            [0.9, -0.9],
            [0.9, -0.45],
            [0.25, -0.45],
            [0.25, 0.9],
            [-0.25, 0.9],
            [-0.25, -0.45],
            [-0.9, -0.45],
        ]),
        other => unreachable!("no geometry for class {other}"),
    }
}

/// Contours centred on their bounding box and scaled so that the farthest
/// vertex is at radius 1, so a pose's radius is the object's true extent.
fn unit_contours(class: usize) -> Vec<Vec<Pt>> {
    let mut cs = raw_contours(class);
    let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for p in cs.iter().flatten() {
        x0 = x0.min(p[0]);
        y0 = y0.min(p[1]);
        x1 = x1.max(p[0]);
        y1 = y1.max(p[1]);
    }
    let (mx, my) = ((x0 + x1) * 0.5, (y0 + y1) * 0.5);
    let mut r2 = 0.0f32;
    for p in cs.iter_mut().flatten() {
        p[0] -= mx;
        p[1] -= my;
        r2 = r2.max(p[0] * p[0] + p[1] * p[1]);
    }
    let inv = 1.0 / r2.sqrt();
    for p in cs.iter_mut().flatten() {
        p[0] *= inv;
        p[1] *= inv;
    }
    cs
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Pose {
    pub(super) cx: f32,
    pub(super) cy: f32,
    pub(super) radius: f32,
    pub(super) cos: f32,
    pub(super) sin: f32,
}

impl Pose {
    pub(super) fn random<R: RngCore>(r: &mut R, size: u32) -> Pose {
        let n = size as f32;
        let radius = uniform(r, 0.45, 0.75) * n * 0.5;
        let cx = uniform(r, radius, n - radius);
        let cy = uniform(r, radius, n - radius);
        let angle = uniform(r, 0.0, TAU);
        Pose { cx, cy, radius, cos: cos(angle), sin: sin(angle) }
    }

    pub(super) fn apply(&self, p: Pt) -> Pt {
        [
            self.cx + self.radius * (self.cos * p[0] - self.sin * p[1]),
            self.cy + self.radius * (self.sin * p[0] + self.cos * p[1]),
        ]
    }
}

pub(super) fn placed_contours(class: usize, pose: &Pose) -> Vec<Vec<Pt>> {
    let mut cs = unit_contours(class);
    for p in cs.iter_mut().flatten() {
        *p = pose.apply(*p);
    }
    cs
}

const SUBROWS: usize = 4;

/// Coverage in [0, 1] of each pixel by the even-odd filled contours: 4
/// sample rows per pixel, each contributing the exact horizontal overlap of
/// its spans. Scanlines instead of per-sample inside tests keep a 64×64
/// shape at a few hundred thousand flops.
pub(super) fn rasterize(contours: &[Vec<Pt>], size: u32) -> Vec<f32> {
    let n = size as usize;
    let mut cov = vec![0.0f32; n * n];
    let mut edges: Vec<[f32; 4]> = Vec::new();
    let (mut ymin, mut ymax) = (f32::MAX, f32::MIN);
    for c in contours {
        for i in 0..c.len() {
            let (a, b) = (c[i], c[(i + 1) % c.len()]);
            edges.push([a[0], a[1], b[0], b[1]]);
            ymin = ymin.min(a[1]);
            ymax = ymax.max(a[1]);
        }
    }
    if edges.is_empty() {
        return cov;
    }
    let row0 = ymin.max(0.0).floor() as usize;
    let row1 = ((ymax.max(0.0).ceil() as usize) + 1).min(n);
    let w = 1.0 / SUBROWS as f32;
    let mut xs: Vec<f32> = Vec::with_capacity(16);
    for py in row0..row1 {
        let row = &mut cov[py * n..(py + 1) * n];
        for j in 0..SUBROWS {
            let y = py as f32 + (j as f32 + 0.5) * w;
            xs.clear();
            for e in &edges {
                // Half-open in y so a vertex on the sample row counts once.
                if (e[1] <= y) != (e[3] <= y) {
                    xs.push(e[0] + (y - e[1]) * (e[2] - e[0]) / (e[3] - e[1]));
                }
            }
            xs.sort_by(f32::total_cmp);
            for span in xs.chunks_exact(2) {
                add_span(row, span[0], span[1], w);
            }
        }
    }
    cov
}

fn add_span(row: &mut [f32], x0: f32, x1: f32, w: f32) {
    let a = x0.max(0.0);
    let b = x1.min(row.len() as f32);
    if b <= a {
        return;
    }
    let i1 = (b.ceil() as usize).min(row.len());
    for (i, px) in row.iter_mut().enumerate().take(i1).skip(a.floor() as usize) {
        let lo = a.max(i as f32);
        let hi = b.min(i as f32 + 1.0);
        if hi > lo {
            *px += w * (hi - lo);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_is_exact_for_a_square() {
        let pose = Pose { cx: 8.0, cy: 8.0, radius: 4.0, cos: 1.0, sin: 0.0 };
        let cs: Vec<Vec<Pt>> =
            vec![vec![[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]].into_iter().map(|p| pose.apply(p)).collect()];
        let cov = rasterize(&cs, 16);
        // The square spans [6, 10] in both axes.
        let total: f32 = cov.iter().sum();
        assert!((total - 16.0).abs() < 1e-4, "{total}");
        assert_eq!(cov[7 * 16 + 7], 1.0);
        assert_eq!(cov[5 * 16 + 5], 0.0);
    }
}
