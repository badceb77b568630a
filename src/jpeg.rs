//! JPEG files decoded as Pillow decodes them, because the study's models saw
//! Pillow's pixels: torchvision's `ImageFolder` opens every ImageNet,
//! ImageNet-C, ImageNet-R and ImageNet-9 file with `Image.open(f).convert("RGB")`.
//!
//! Pillow decodes with libjpeg-turbo (islow inverse DCT, fancy upsampling,
//! libjpeg's YCbCr → RGB tables). image-rs's decoder rounds its inverse DCT
//! and chroma upsampling differently: on the same photographs a real
//! EfficientNet-Lite0's log-probabilities moved by 0.03–0.16 and one top-1
//! decision in five flipped. So quba decodes JPEG with libjpeg-turbo's own
//! decoder (as vendored by mozjpeg-sys, built from C for every target,
//! without SIMD: libjpeg-turbo's SIMD paths are bit-exact with its C ones,
//! and C needs no assembler in a cross build). `src/jpeg.c` holds the decode
//! behind one `setjmp`, because libjpeg's errors must not return and Rust
//! can neither catch a `longjmp` nor unwind on the board (`panic = "abort"`).
//!
//! Colour follows Pillow's `convert("RGB")`: greyscale is copied to the three
//! channels; CMYK (and YCCK) files are read with Adobe's inverted polarity,
//! as Pillow assumes for every CMYK JPEG, then mapped by Pillow's
//! `cmyk2rgb`. `tests/it/pillow_jpeg.rs` checks every pixel against Pillow.

use std::ffi::{c_char, c_int, c_uchar, c_uint, c_ulong, CStr};

use anyhow::{bail, Result};
use image::RgbImage;
// Only src/jpeg.c calls libjpeg; without a Rust-side use the crate, and with
// it the library, would not be linked.
extern crate mozjpeg_sys;

extern "C" {
    fn quba_jpeg_decode(
        data: *const c_uchar,
        len: c_ulong,
        max_bytes: c_ulong,
        out: *mut *mut c_uchar,
        width: *mut c_uint,
        height: *mut c_uint,
        components: *mut c_int,
        message: *mut c_char,
        message_len: c_ulong,
    ) -> c_int;
    fn quba_jpeg_free(pixels: *mut c_uchar);
}

/// The decoder as run headers name it; the version is mozjpeg-sys's, whose
/// vendored C sources are what was compiled (build.rs reads it).
pub const DECODER: &str = concat!("libjpeg-turbo islow+fancy (mozjpeg-sys ", env!("QUBA_MOZJPEG_SYS"), ")");

/// Whether `bytes` start like a JPEG file (SOI, then a marker), whatever the
/// file is called: Pillow also goes by content.
pub fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.len() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF
}

/// Decodes a JPEG file's bytes to RGB as Pillow's `convert("RGB")` does.
/// Images whose decoded pixels would exceed `max_bytes` are refused before
/// anything is allocated for them.
pub fn decode_rgb(bytes: &[u8], max_bytes: usize) -> Result<RgbImage> {
    let mut out = std::ptr::null_mut();
    let (mut w, mut h, mut comps) = (0, 0, 0);
    let mut message = [0 as c_char; 200];
    // SAFETY: every pointer is valid for the call; the C side writes `out`
    // only on success, with a malloc'd buffer of w·h·comps bytes that is
    // copied and freed below, and NUL-terminates `message` on failure.
    let status = unsafe {
        quba_jpeg_decode(
            bytes.as_ptr(),
            bytes.len() as c_ulong,
            max_bytes as c_ulong,
            &mut out,
            &mut w,
            &mut h,
            &mut comps,
            message.as_mut_ptr(),
            message.len() as c_ulong,
        )
    };
    if status != 0 {
        // SAFETY: NUL-terminated by snprintf on the C side.
        let why = unsafe { CStr::from_ptr(message.as_ptr()) }.to_string_lossy().into_owned();
        bail!("JPEG: {why}");
    }
    let n = w as usize * h as usize * comps as usize;
    // SAFETY: on success `out` holds n initialised bytes.
    let pixels = unsafe { std::slice::from_raw_parts(out, n) }.to_vec();
    // SAFETY: allocated by the C side's malloc, not used after this.
    unsafe { quba_jpeg_free(out) };
    let rgb = match comps {
        1 => pixels.iter().flat_map(|&v| [v, v, v]).collect(),
        3 => pixels,
        4 => pixels.chunks_exact(4).flat_map(|p| cmyk_to_rgb([255 - p[0], 255 - p[1], 255 - p[2], 255 - p[3]])).collect(),
        c => bail!("JPEG: {c} colour components (1, 3 or 4 expected)"),
    };
    Ok(RgbImage::from_raw(w, h, rgb).expect("w·h·3 bytes"))
}

/// Pillow's `cmyk2rgb` (libImaging/Convert.c): each channel is the ink's
/// complement scaled by the black's, with Pillow's rounded division by 255.
fn cmyk_to_rgb([c, m, y, k]: [u8; 4]) -> [u8; 3] {
    let nk = 255 - k as u32;
    let muldiv255 = |a: u32, b: u32| {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    };
    [c, m, y].map(|v| (nk - muldiv255(v as u32, nk)) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_file_is_an_error_not_grey_pixels() {
        let img = RgbImage::from_fn(32, 24, |x, y| image::Rgb([(x * 8) as u8, (y * 10) as u8, 128]));
        let bytes = crate::corrupt::imagenet_c::jpeg_encode(img.as_raw(), 32, 24, 85).unwrap();
        assert!(decode_rgb(&bytes, 1 << 20).is_ok());
        let err = decode_rgb(&bytes[..bytes.len() / 2], 1 << 20).unwrap_err().to_string();
        assert!(err.contains("Premature end"), "{err}");
        let err = decode_rgb(&bytes, 32 * 24 * 3 - 1).unwrap_err().to_string();
        assert!(err.contains("32 x 24 x 3"), "{err}");
        let err = decode_rgb(b"\xFF\xD8\xFF\xE0 not a jpeg", 1 << 20).unwrap_err().to_string();
        assert!(err.starts_with("JPEG: "), "{err}");
    }

    #[test]
    fn cmyk_follows_pillow() {
        assert_eq!(cmyk_to_rgb([0, 0, 0, 0]), [255, 255, 255]);
        assert_eq!(cmyk_to_rgb([255, 255, 255, 0]), [0, 0, 0]);
        assert_eq!(cmyk_to_rgb([0, 128, 255, 128]), [127, 63, 0]);
    }
}
