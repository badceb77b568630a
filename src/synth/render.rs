//! Rendering: one image of a split from its stream (`render_full`), and the
//! painters of each split's look: textured objects on backgrounds, edge
//! maps, pencil sketches, renditions. Kept apart from the public entry
//! points in `mod.rs`, which only name and write what is painted here.

use image::RgbImage;
use rand::RngCore;

use super::backgrounds::{Backdrop, BgParams};
use super::maths::{clamp01, mix, quantise, rgb8};
use super::rng::{
    below, hash_unit, stream, unit, uniform, DOMAIN_BG_OBJECT, DOMAIN_IMAGE, DOMAIN_TEXTURE_INSTANCE, TEXTURE_INSTANCES,
};
use super::shapes::{placed_contours, rasterize, Pose, Pt};
use super::textures::{texture_rgb, TexParams};
use super::{
    check_size, Split, SynthConfig, SynthImage, CLASSES, HELD_OUT_TEXTURE_START, NO_TEXTURE, NUM_CLASSES,
    PLAIN_BACKGROUND, TEXTURE_NAMES,
};

pub(super) fn render_full(cfg: &SynthConfig, split: Split, index: u32) -> (SynthImage, Vec<f32>) {
    if let Err(e) = check_size(cfg.size) {
        panic!("{e}");
    }
    let size = cfg.size;
    let classes = NUM_CLASSES as u32;
    let label = (index % classes) as u16;
    let round = index / classes;
    let mut rng = stream(&[cfg.seed, DOMAIN_IMAGE, split.tag(), index as u64]);
    let mut file_name = format!("{index:04}.png");

    let (buf, texture, background, cov) = match split {
        Split::Train | Split::Val => {
            let pose = Pose::random(&mut rng, size);
            // Both the coin and the alternative are always drawn, so the
            // probabilities change only the choice, never the pose or the
            // background instance: p-variants of a split stay aligned.
            let keep_tex = unit(&mut rng) < cfg.p_texture;
            let other_tex = below(&mut rng, classes) as u16;
            let tp = TexParams::random(&mut rng);
            let keep_bg = unit(&mut rng) < cfg.p_background;
            let other_bg = below(&mut rng, classes) as u16;
            let tex = if keep_tex { label } else { other_tex };
            let bg = Backdrop::Family(BgParams::random(&mut rng, if keep_bg { label } else { other_bg }));
            let cov = rasterize(&placed_contours(label as usize, &pose), size);
            (paint_object(size, &cov, &pose, tex, &tp, &bg), tex, bg.id(), cov)
        }
        Split::Stylized => {
            let pose = Pose::random(&mut rng, size);
            let held_out = TEXTURE_NAMES.len() as u32 - HELD_OUT_TEXTURE_START as u32;
            let tex = HELD_OUT_TEXTURE_START + below(&mut rng, held_out) as u16;
            let tp = TexParams::random(&mut rng);
            let family = below(&mut rng, classes) as u16;
            let bg = Backdrop::Family(BgParams::random(&mut rng, family));
            let cov = rasterize(&placed_contours(label as usize, &pose), size);
            (paint_object(size, &cov, &pose, tex, &tp, &bg), tex, bg.id(), cov)
        }
        Split::CueConflict => {
            // Round k pairs every shape A with texture class A+1+(k mod 15),
            // so 15 consecutive rounds cover each ordered pair exactly once.
            let tex = ((label as u32 + 1 + round % (classes - 1)) % classes) as u16;
            let pose = Pose::random(&mut rng, size);
            let m = 1 + below(&mut rng, TEXTURE_INSTANCES);
            let tp = TexParams::random(&mut stream(&[cfg.seed, DOMAIN_TEXTURE_INSTANCE, tex as u64, m as u64]));
            let bg = Backdrop::Flat([0.72, 0.72, 0.72]);
            let cov = rasterize(&placed_contours(label as usize, &pose), size);
            file_name =
                format!("{index:04}_{}{}-{}{}.png", CLASSES[label as usize], round + 1, CLASSES[tex as usize], m);
            (paint_object(size, &cov, &pose, tex, &tp, &bg), tex, bg.id(), cov)
        }
        Split::MixedSame | Split::MixedRand => {
            let mut obj = stream(&[cfg.seed, DOMAIN_BG_OBJECT, index as u64]);
            let pose = Pose::random(&mut obj, size);
            let tp = TexParams::random(&mut obj);
            let other = ((label as u32 + 1 + below(&mut rng, classes - 1)) % classes) as u16;
            let family = if split == Split::MixedSame { label } else { other };
            let bg = Backdrop::Family(BgParams::random(&mut rng, family));
            let cov = rasterize(&placed_contours(label as usize, &pose), size);
            (paint_object(size, &cov, &pose, label, &tp, &bg), label, bg.id(), cov)
        }
        Split::Edge => {
            let pose = Pose::random(&mut rng, size);
            let cov = rasterize(&placed_contours(label as usize, &pose), size);
            (paint_edges(size, &cov), NO_TEXTURE, PLAIN_BACKGROUND, cov)
        }
        Split::Silhouette => {
            let pose = Pose::random(&mut rng, size);
            let cov = rasterize(&placed_contours(label as usize, &pose), size);
            let buf = cov.iter().flat_map(|&c| [if c >= 0.5 { 0u8 } else { 255 }; 3]).collect();
            (buf, NO_TEXTURE, PLAIN_BACKGROUND, cov)
        }
        Split::Sketch => {
            let pose = Pose::random(&mut rng, size);
            let contours = placed_contours(label as usize, &pose);
            let cov = rasterize(&contours, size);
            (paint_sketch(size, &contours, &mut rng), NO_TEXTURE, PLAIN_BACKGROUND, cov)
        }
        Split::Rendition => {
            let pose = Pose::random(&mut rng, size);
            let cov = rasterize(&placed_contours(label as usize, &pose), size);
            (paint_rendition(size, &cov, &mut rng), NO_TEXTURE, PLAIN_BACKGROUND, cov)
        }
    };
    let image = RgbImage::from_raw(size, size, buf).expect("buffer matches image size");
    (SynthImage { image, label, texture, background, file_name }, cov)
}

pub(super) fn paint_object(size: u32, cov: &[f32], pose: &Pose, tex: u16, tp: &TexParams, bg: &Backdrop) -> Vec<u8> {
    let n = size as usize;
    let s = size as f32;
    let mut buf = Vec::with_capacity(n * n * 3);
    for py in 0..n {
        for px in 0..n {
            let back = bg.at(px, py, s);
            let c = cov[py * n + px];
            let col = if c > 0.0 { mix(back, texture_rgb(tex, tp, px, py, pose, s), c.min(1.0)) } else { back };
            buf.extend(col.map(quantise));
        }
    }
    buf
}

/// Thin dark lines on white where the coverage changes (Sobel magnitude),
/// like a Canny edge map; widened on large images so they scale.
fn paint_edges(size: u32, cov: &[f32]) -> Vec<u8> {
    let n = size as usize;
    let at = |x: isize, y: isize| cov[(y.clamp(0, n as isize - 1) as usize) * n + x.clamp(0, n as isize - 1) as usize];
    let mut dark = vec![0.0f32; n * n];
    for y in 0..n as isize {
        for x in 0..n as isize {
            let gx = at(x + 1, y - 1) + 2.0 * at(x + 1, y) + at(x + 1, y + 1)
                - at(x - 1, y - 1)
                - 2.0 * at(x - 1, y)
                - at(x - 1, y + 1);
            let gy = at(x - 1, y + 1) + 2.0 * at(x, y + 1) + at(x + 1, y + 1)
                - at(x - 1, y - 1)
                - 2.0 * at(x, y - 1)
                - at(x + 1, y - 1);
            dark[y as usize * n + x as usize] = clamp01((gx * gx + gy * gy).sqrt() * 0.375);
        }
    }
    let dark = morph(&dark, n, n / 100, true);
    dark.iter().flat_map(|&d| [quantise(1.0 - d); 3]).collect()
}

/// Pencil on paper: the outline resampled into short segments, each point
/// displaced by a smooth random walk, drawn twice (a firm pass and a lighter
/// sketchy one) with random gaps so strokes look broken and hand-made.
fn paint_sketch<R: RngCore>(size: u32, contours: &[Vec<Pt>], rng: &mut R) -> Vec<u8> {
    let n = size as usize;
    let k = size as f32 / 64.0;
    let step = 3.0 * k;
    let half_width = 0.45 * k + 0.25;
    let grain_seed = rng.next_u32();
    let mut ink = vec![0.0f32; n * n];
    for contour in contours {
        let mut pts: Vec<Pt> = Vec::new();
        for i in 0..contour.len() {
            let (a, b) = (contour[i], contour[(i + 1) % contour.len()]);
            let len = ((b[0] - a[0]) * (b[0] - a[0]) + (b[1] - a[1]) * (b[1] - a[1])).sqrt();
            let segs = ((len / step).ceil() as usize).max(1);
            for s in 0..segs {
                let t = s as f32 / segs as f32;
                pts.push([a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t]);
            }
        }
        if pts.len() < 2 {
            continue;
        }
        for (amp, keep, opacity) in [(0.8 * k, 0.93f32, 0.9f32), (1.5 * k, 0.6, 0.5)] {
            let (mut jx, mut jy) = (uniform(rng, -amp, amp), uniform(rng, -amp, amp));
            let mut drawing = true;
            let mut prev: Option<Pt> = None;
            // One point past the start closes the loop.
            for i in 0..=pts.len() {
                jx = 0.7 * jx + uniform(rng, -amp, amp) * 0.6;
                jy = 0.7 * jy + uniform(rng, -amp, amp) * 0.6;
                let p = pts[i % pts.len()];
                let q = [p[0] + jx, p[1] + jy];
                let toggle = unit(rng);
                drawing = if drawing { toggle < keep } else { toggle < 0.5 };
                if let (Some(a), true) = (prev, drawing) {
                    draw_segment(&mut ink, n, a, q, half_width, opacity);
                }
                prev = Some(q);
            }
        }
    }
    let paper = rgb8([246, 241, 226]);
    let graphite = rgb8([45, 45, 55]);
    let mut buf = Vec::with_capacity(n * n * 3);
    for py in 0..n {
        for px in 0..n {
            let g = (hash_unit(grain_seed, px as i32, py as i32) - 0.5) * 0.04;
            let p = [paper[0] + g, paper[1] + g, paper[2] + g];
            buf.extend(mix(p, graphite, ink[py * n + px]).map(quantise));
        }
    }
    buf
}

fn draw_segment(ink: &mut [f32], n: usize, a: Pt, b: Pt, half_width: f32, opacity: f32) {
    let reach = half_width + 1.0;
    let x0 = (a[0].min(b[0]) - reach).floor().max(0.0) as usize;
    let y0 = (a[1].min(b[1]) - reach).floor().max(0.0) as usize;
    let x1 = ((a[0].max(b[0]) + reach).ceil().max(0.0) as usize).min(n);
    let y1 = ((a[1].max(b[1]) + reach).ceil().max(0.0) as usize).min(n);
    let (ex, ey) = (b[0] - a[0], b[1] - a[1]);
    let len2 = ex * ex + ey * ey;
    for y in y0..y1 {
        for x in x0..x1 {
            let (qx, qy) = (x as f32 + 0.5 - a[0], y as f32 + 0.5 - a[1]);
            let t = if len2 > 0.0 { clamp01((qx * ex + qy * ey) / len2) } else { 0.0 };
            let (dx, dy) = (qx - t * ex, qy - t * ey);
            let alpha = clamp01(half_width + 0.5 - (dx * dx + dy * dy).sqrt()) * opacity;
            let cell = &mut ink[y * n + x];
            *cell = cell.max(alpha);
        }
    }
}

const BRIGHT: [[u8; 3]; 8] = [
    [230, 50, 50],
    [250, 150, 30],
    [245, 215, 40],
    [60, 180, 75],
    [50, 110, 230],
    [150, 70, 200],
    [240, 110, 170],
    [40, 200, 210],
];

const PASTEL: [[u8; 3]; 6] =
    [[250, 245, 230], [220, 235, 250], [235, 250, 225], [250, 225, 235], [238, 238, 238], [255, 250, 205]];

/// The ImageNet-R analogue: the same shapes in other rendering styles
/// (cartoon with a thick outline, pixel art, neon), flat colours unrelated to
/// the class, on a plain backdrop.
fn paint_rendition<R: RngCore>(size: u32, cov: &[f32], rng: &mut R) -> Vec<u8> {
    let n = size as usize;
    let style = below(rng, 3);
    let fill = rgb8(BRIGHT[below(rng, BRIGHT.len() as u32) as usize]);
    let back = rgb8(PASTEL[below(rng, PASTEL.len() as u32) as usize]);
    let outline = rgb8([25, 25, 35]);
    let mut out = vec![[0.0f32; 3]; n * n];
    match style {
        0 => {
            let r = (n / 48).max(1);
            let outer = morph(cov, n, r, true);
            let inner = morph(cov, n, r, false);
            for i in 0..n * n {
                let body = mix(back, fill, cov[i].min(1.0));
                out[i] = mix(body, outline, clamp01(outer[i] - inner[i]));
            }
        }
        1 => {
            let block = (n / 20).max(2);
            let g = n.div_ceil(block);
            let mut filled = vec![false; g * g];
            for by in 0..g {
                for bx in 0..g {
                    let (mut sum, mut count) = (0.0f32, 0.0f32);
                    for y in by * block..((by + 1) * block).min(n) {
                        for x in bx * block..((bx + 1) * block).min(n) {
                            sum += cov[y * n + x];
                            count += 1.0;
                        }
                    }
                    filled[by * g + bx] = sum >= 0.5 * count;
                }
            }
            let is = |bx: isize, by: isize| {
                bx >= 0 && by >= 0 && (bx as usize) < g && (by as usize) < g && filled[by as usize * g + bx as usize]
            };
            for y in 0..n {
                for x in 0..n {
                    let (bx, by) = ((x / block) as isize, (y / block) as isize);
                    out[y * n + x] = if !is(bx, by) {
                        back
                    } else if !is(bx - 1, by) || !is(bx + 1, by) || !is(bx, by - 1) || !is(bx, by + 1) {
                        outline
                    } else {
                        fill
                    };
                }
            }
        }
        _ => {
            let night = rgb8([13, 10, 26]);
            let r = (n / 64).max(1);
            let outer = morph(cov, n, r, true);
            let inner = morph(cov, n, r, false);
            let line: Vec<f32> = outer.iter().zip(&inner).map(|(o, i)| clamp01(o - i)).collect();
            let glow = box_blur(&line, n, (n / 16).max(2));
            let core = mix(fill, [1.0, 1.0, 1.0], 0.55);
            for i in 0..n * n {
                let g = clamp01(glow[i] * 2.2);
                let lit = [night[0] + fill[0] * g, night[1] + fill[1] * g, night[2] + fill[2] * g];
                out[i] = mix(lit, core, line[i]);
            }
        }
    }
    out.iter().flat_map(|c| c.map(quantise)).collect()
}

/// Separable square max (dilate) or min (erode) filter of radius r.
fn morph(src: &[f32], n: usize, r: usize, max: bool) -> Vec<f32> {
    if r == 0 {
        return src.to_vec();
    }
    let pick = |a: f32, b: f32| if max { a.max(b) } else { a.min(b) };
    let mut tmp = vec![0.0f32; n * n];
    let mut out = vec![0.0f32; n * n];
    for y in 0..n {
        for x in 0..n {
            let (lo, hi) = (x.saturating_sub(r), (x + r).min(n - 1));
            tmp[y * n + x] = (lo + 1..=hi).fold(src[y * n + lo], |m, k| pick(m, src[y * n + k]));
        }
    }
    for y in 0..n {
        let (lo, hi) = (y.saturating_sub(r), (y + r).min(n - 1));
        for x in 0..n {
            out[y * n + x] = (lo + 1..=hi).fold(tmp[lo * n + x], |m, k| pick(m, tmp[k * n + x]));
        }
    }
    out
}

/// Separable box blur of radius r, treating outside pixels as 0.
fn box_blur(src: &[f32], n: usize, r: usize) -> Vec<f32> {
    let w = 1.0 / (2 * r + 1) as f32;
    let mut tmp = vec![0.0f32; n * n];
    let mut out = vec![0.0f32; n * n];
    for y in 0..n {
        for x in 0..n {
            let (lo, hi) = (x.saturating_sub(r), (x + r).min(n - 1));
            tmp[y * n + x] = (lo..=hi).map(|k| src[y * n + k]).sum::<f32>() * w;
        }
    }
    for y in 0..n {
        let (lo, hi) = (y.saturating_sub(r), (y + r).min(n - 1));
        for x in 0..n {
            out[y * n + x] = (lo..=hi).map(|k| tmp[k * n + x]).sum::<f32>() * w;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::render;
    use crate::synth::tests::cfg;
    use crate::synth::textures::HOME_PALETTES;

    /// Splits a model-vs-human cue-conflict name `…<shape><n>-<texture><m>.png`
    /// into the two class names, as a loader of the real set would.
    use crate::benchmark::parse_cue_conflict;

    #[test]
    fn cue_conflict_names_cover_all_pairs() {
        let mut seen = [[0u32; NUM_CLASSES]; NUM_CLASSES];
        for index in 0..16 * 15 {
            let img = render(&cfg(), Split::CueConflict, index);
            let (shape, texture) = parse_cue_conflict(&img.file_name).expect(&img.file_name);
            assert_eq!(shape, CLASSES[img.label as usize], "{}", img.file_name);
            assert_eq!(texture, CLASSES[img.texture as usize], "{}", img.file_name);
            assert_ne!(shape, texture);
            assert!(img.file_name.starts_with(&format!("{index:04}_")));
            assert_eq!(img.background, PLAIN_BACKGROUND);
            seen[img.label as usize][img.texture as usize] += 1;
        }
        for (a, row) in seen.iter().enumerate() {
            for (b, &count) in row.iter().enumerate() {
                assert_eq!(count, (a != b) as u32, "pair {a},{b}");
            }
        }
        // The brief's example name parses the same way.
        assert_eq!(parse_cue_conflict("0007_star3-ring1.png"), Some(("star", "ring")));
    }

    #[test]
    fn silhouettes_are_binary() {
        for index in 0..32 {
            let img = render(&cfg(), Split::Silhouette, index);
            let px = img.image.as_raw();
            assert!(px.iter().all(|&v| v == 0 || v == 255));
            let black = px.chunks(3).filter(|p| p[0] == 0).count() as f32 / (64.0 * 64.0);
            assert!((0.04..0.6).contains(&black), "index {index}: black fraction {black}");
            assert_eq!((img.texture, img.background), (NO_TEXTURE, PLAIN_BACKGROUND));
        }
    }

    #[test]
    fn line_drawings_are_mostly_light_with_some_ink() {
        for split in [Split::Edge, Split::Sketch] {
            for index in 0..32 {
                let img = render(&cfg(), split, index);
                let grey: Vec<u8> = img.image.pixels().map(|p| p[1]).collect();
                let light = grey.iter().filter(|&&v| v > 200).count() as f32 / grey.len() as f32;
                let dark = grey.iter().filter(|&&v| v < 128).count();
                assert!(light > 0.75, "{split:?} {index}: light {light}");
                assert!(dark > 40, "{split:?} {index}: only {dark} dark pixels");
            }
        }
    }

    fn fully_covered(cov: &[f32]) -> Vec<usize> {
        cov.iter().enumerate().filter(|(_, &c)| c >= 0.9999).map(|(i, _)| i).collect()
    }

    fn in_palette(p: &[u8], palette: &[[u8; 3]]) -> bool {
        palette.iter().any(|c| c.iter().zip(p).all(|(a, b)| a.abs_diff(*b) <= 1))
    }

    #[test]
    fn shortcuts_follow_the_probabilities() {
        let always = SynthConfig { p_texture: 1.0, p_background: 1.0, ..cfg() };
        for index in 0..64 {
            let (img, cov) = render_full(&always, Split::Train, index);
            assert_eq!((img.texture, img.background), (img.label, img.label));
            let inside = fully_covered(&cov);
            assert!(inside.len() > 100, "index {index}: {} interior pixels", inside.len());
            let raw = img.image.as_raw();
            let home = HOME_PALETTES[img.label as usize];
            let hits = inside.iter().filter(|&&i| in_palette(&raw[3 * i..3 * i + 3], home)).count();
            assert_eq!(hits, inside.len(), "index {index}: object pixels off the home palette");
            // And the pattern is not a flat fill: every palette colour of a
            // two-colour texture shows up.
            if home.len() == 2 {
                for c in home {
                    assert!(inside.iter().any(|&i| in_palette(&raw[3 * i..3 * i + 3], &[*c])), "index {index}");
                }
            }
        }
        let n = 16 * 40;
        let home_rate = |c: &SynthConfig| {
            let (mut t, mut b) = (0, 0);
            for index in 0..n {
                let img = render(c, Split::Train, index);
                t += (img.texture == img.label) as u32;
                b += (img.background == img.label) as u32;
            }
            (t as f32 / n as f32, b as f32 / n as f32)
        };
        let (t, b) = home_rate(&cfg());
        // Expected 0.8 + 0.2/16 = 0.8125.
        assert!((0.76..0.87).contains(&t) && (0.76..0.87).contains(&b), "{t} {b}");
        let (t, b) = home_rate(&SynthConfig { p_texture: 0.0, p_background: 0.0, ..cfg() });
        assert!(t < 0.12 && b < 0.12, "{t} {b}");
    }

    #[test]
    fn probabilities_do_not_move_the_object() {
        let randomised = SynthConfig { p_texture: 0.0, p_background: 0.0, ..cfg() };
        for index in 0..16 {
            assert_eq!(render_full(&cfg(), Split::Train, index).1, render_full(&randomised, Split::Train, index).1);
        }
    }

    #[test]
    fn stylized_uses_only_held_out_textures() {
        let mut used = std::collections::HashSet::new();
        for index in 0..16 * 4 {
            let img = render(&cfg(), Split::Stylized, index);
            assert!(img.texture >= HELD_OUT_TEXTURE_START && (img.texture as usize) < TEXTURE_NAMES.len());
            assert!((img.background as usize) < NUM_CLASSES);
            used.insert(img.texture);
        }
        assert_eq!(used.len(), TEXTURE_NAMES.len() - HELD_OUT_TEXTURE_START as usize);
    }

    #[test]
    fn backgrounds_challenge_pairs_objects() {
        for index in 0..48 {
            let (same, cs) = render_full(&cfg(), Split::MixedSame, index);
            let (rand, cr) = render_full(&cfg(), Split::MixedRand, index);
            assert_eq!(same.file_name, rand.file_name);
            assert_eq!((same.label, same.texture), (rand.label, rand.label));
            assert_eq!(same.texture, same.label);
            assert_eq!(same.background, same.label);
            assert_ne!(rand.background, rand.label);
            assert!((rand.background as usize) < NUM_CLASSES);
            // Same object instance: identical coverage and identical interior pixels.
            assert_eq!(cs, cr);
            let (a, b) = (same.image.as_raw(), rand.image.as_raw());
            for i in fully_covered(&cs) {
                assert_eq!(a[3 * i..3 * i + 3], b[3 * i..3 * i + 3], "index {index} pixel {i}");
            }
            assert_ne!(a, b);
        }
    }

    #[test]
    fn sizes_scale() {
        for size in [16, 32, 100, 128] {
            let c = SynthConfig { size, ..cfg() };
            for split in Split::ALL {
                let img = render(&c, split, 3);
                assert_eq!(img.image.dimensions(), (size, size));
            }
            // The object's share of the image does not depend on the size.
            let (_, cov) = render_full(&c, Split::Silhouette, 5);
            let (_, cov64) = render_full(&cfg(), Split::Silhouette, 5);
            let share = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
            assert!((share(&cov) - share(&cov64)).abs() < 0.02, "size {size}");
        }
    }
}
