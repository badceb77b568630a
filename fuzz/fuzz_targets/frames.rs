//! Any bytes into the frame decoder: no panic, no frame that was not sent
//! whole, and the same result however the bytes are split into reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quba_wire::{decode_all, FrameDecoder, FrameEncoder};

fuzz_target!(|data: &[u8]| {
    let (whole, stats) = decode_all(data);

    // Frames with the bytes the decoder lends, as the host logs them, from
    // `data` in reads of `piece` bytes.
    let read = |piece: usize| {
        let mut dec = FrameDecoder::new();
        let mut frames = Vec::new();
        for chunk in data.chunks(piece) {
            dec.push(chunk, |f, bytes| frames.push((f.seq, bytes.to_vec())));
        }
        dec.finish();
        (frames, dec.stats)
    };
    let (at_once, at_once_stats) = read(data.len().max(1));
    assert_eq!(at_once_stats, stats);
    assert!(at_once.iter().map(|(seq, _)| *seq).eq(whole.iter().map(|f| f.seq)));
    // A socket hands the host arbitrary pieces; the first byte picks their size.
    let piece = data.first().map_or(1, |b| usize::from(*b % 64) + 1);
    let (pieces, pieces_stats) = read(piece);
    assert_eq!(pieces_stats, stats, "split into {piece}-byte reads");
    // Bytes, not messages: a NaN read from noise is not equal to itself.
    assert_eq!(pieces, at_once, "split into {piece}-byte reads");

    // Two encoders in step (same sequence numbers), made once: each holds
    // two frame-sized buffers.
    let (mut first, mut second) = (FrameEncoder::new(), FrameEncoder::new());
    for (f, (_, logged)) in whole.iter().zip(&at_once) {
        // What the host logs is a frame exactly: one delimiter, at the end.
        assert_eq!(logged.iter().filter(|&&b| b == 0).count(), 1);
        assert_eq!(logged.last(), Some(&0));
        // Anything that decoded can be sent again and reads back the same.
        let bytes = first.encode(&f.message).expect("a decoded message fits a frame").to_vec();
        let (again, s) = decode_all(&bytes);
        assert_eq!(s.corrupt_frames, 0);
        assert_eq!(again.len(), 1);
        let twice = second.encode(&again[0].message).expect("and again");
        assert_eq!(twice, &bytes[..]);
    }
});
