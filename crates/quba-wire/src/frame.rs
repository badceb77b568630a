//! Framing: COBS( version | seq | postcard payload | CRC-32 ) 0x00, the
//! encoder that writes it and the decoder that resynchronises after damage.

use serde::{Deserialize, Serialize};

use crate::message::{Message, PROTOCOL_VERSION};

/// Largest serialised message: a record with a full 1000-class f32 vector
/// (4 000 bytes + a few varints) fits with room to spare.
pub const MAX_PAYLOAD: usize = 4_200;

/// version (1) + sequence number (4) + payload + CRC-32 (4).
const MAX_RAW: usize = MAX_PAYLOAD + 9;

/// COBS adds one byte per 254 plus one; the trailing zero delimits the frame.
pub const MAX_FRAME: usize = MAX_RAW + MAX_RAW / 254 + 2;

#[derive(Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The message does not fit `MAX_PAYLOAD`; names the size limit.
    TooLarge,
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "message larger than the {MAX_PAYLOAD}-byte frame payload limit")
    }
}

impl std::error::Error for EncodeError {}

/// Writes frames into buffers it owns, so encoding a record allocates nothing.
pub struct FrameEncoder {
    seq: u32,
    raw: [u8; MAX_RAW],
    out: [u8; MAX_FRAME],
}

impl Default for FrameEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameEncoder {
    pub fn new() -> Self {
        FrameEncoder { seq: 0, raw: [0; MAX_RAW], out: [0; MAX_FRAME] }
    }

    /// Sequence number the next frame will carry.
    pub fn next_seq(&self) -> u32 {
        self.seq
    }

    /// Encodes one message as a complete frame (COBS, zero-terminated).
    pub fn encode(&mut self, msg: &Message) -> Result<&[u8], EncodeError> {
        self.raw[0] = PROTOCOL_VERSION;
        self.raw[1..5].copy_from_slice(&self.seq.to_le_bytes());
        let payload_len = postcard::to_slice(msg, &mut self.raw[5..5 + MAX_PAYLOAD])
            .map_err(|_| EncodeError::TooLarge)?
            .len();
        let body = 5 + payload_len;
        let crc = crc32fast::hash(&self.raw[..body]);
        self.raw[body..body + 4].copy_from_slice(&crc.to_le_bytes());
        let n = cobs::encode(&self.raw[..body + 4], &mut self.out);
        self.out[n] = 0;
        self.seq = self.seq.wrapping_add(1);
        Ok(&self.out[..=n])
    }
}

/// What a decoder threw away, so a report can say how much was lost.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeStats {
    pub frames: u64,
    /// Frames whose COBS, CRC, version or payload did not check out.
    pub corrupt_frames: u64,
    /// Bytes discarded with those frames (and with an unterminated tail).
    pub bytes_lost: u64,
    /// Frames missing according to sequence-number gaps.
    pub missing_frames: u64,
    /// A final frame with no terminator (stream cut mid-frame).
    pub truncated_tail: bool,
}

impl DecodeStats {
    pub fn is_clean(&self) -> bool {
        self.corrupt_frames == 0 && self.missing_frames == 0 && !self.truncated_tail
    }
}

/// A frame that checked out. [`FrameDecoder::push`] lends its bytes beside
/// it, for a host that logs exactly what it received.
#[derive(Debug, Clone)]
pub struct Frame {
    pub seq: u32,
    /// Where its first byte lies in everything the decoder was fed: the gaps
    /// between good frames are where damaged ones were, and a host names
    /// them when what they carried is missing.
    pub offset: u64,
    pub message: Message,
}

/// Streaming decoder: feed it any byte chunks; it yields only frames whose
/// CRC matches, and resynchronises at the next zero byte after damage.
pub struct FrameDecoder {
    /// The start of a frame whose delimiter has not arrived yet.
    pending: Vec<u8>,
    /// Set after an over-long frame: drop bytes until the next delimiter.
    skipping: bool,
    /// A frame's COBS-decoded bytes; one buffer for every frame, so a frame
    /// allocates nothing beyond what its message holds.
    raw: Vec<u8>,
    last_seq: Option<u32>,
    /// Bytes fed so far, and the offset of the first byte after the last
    /// delimiter (where the next frame begins).
    fed: u64,
    start: u64,
    pub stats: DecodeStats,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    pub fn new() -> Self {
        FrameDecoder { pending: Vec::new(), skipping: false, raw: vec![0; MAX_FRAME], last_seq: None, fed: 0, start: 0, stats: DecodeStats::default() }
    }

    /// Hands `on_frame` each frame completed by `bytes`, with the frame's
    /// bytes as received (up to and including its delimiter). They are lent,
    /// not copied: at a million frames a second, an allocation each was a
    /// fifth of the host's time, and most callers do not keep them.
    pub fn push(&mut self, mut bytes: &[u8], mut on_frame: impl FnMut(Frame, &[u8])) {
        self.fed += bytes.len() as u64;
        let end = self.fed;
        while !bytes.is_empty() {
            let Some(i) = bytes.iter().position(|&b| b == 0) else {
                if self.skipping {
                    self.stats.bytes_lost += bytes.len() as u64;
                } else {
                    self.pending.extend_from_slice(bytes);
                    // Bound memory on garbage with no delimiter in sight.
                    if self.pending.len() > MAX_FRAME {
                        self.stats.bytes_lost += self.pending.len() as u64;
                        self.stats.corrupt_frames += 1;
                        self.pending.clear();
                        self.skipping = true;
                    }
                }
                return;
            };
            let (chunk, rest) = bytes.split_at(i + 1);
            bytes = rest;
            let start = std::mem::replace(&mut self.start, end - bytes.len() as u64);
            if self.skipping {
                self.stats.bytes_lost += chunk.len() as u64;
                self.skipping = false;
            } else if self.pending.is_empty() {
                // Most frames lie whole in one read: checked where they lie.
                self.check(chunk, start, &mut on_frame);
            } else {
                let mut whole = std::mem::take(&mut self.pending);
                whole.extend_from_slice(chunk);
                self.check(&whole, start, &mut on_frame);
                whole.clear();
                self.pending = whole;
            }
        }
    }

    /// Call at end of stream: an unterminated tail is a torn frame.
    pub fn finish(&mut self) {
        if !self.pending.is_empty() {
            self.stats.bytes_lost += self.pending.len() as u64;
            self.stats.truncated_tail = true;
            self.pending.clear();
        }
    }

    /// `chunk` is one frame's bytes up to and including its delimiter, the
    /// first of them at `offset`.
    fn check(&mut self, chunk: &[u8], offset: u64, on_frame: &mut impl FnMut(Frame, &[u8])) {
        // A lone delimiter (e.g. after resync) carries nothing.
        if chunk.len() == 1 {
            return;
        }
        // A `Message` is half a kilobyte whatever it holds (room for a
        // header), and every move copies all of it: it goes from postcard
        // straight into the `Frame` handed on, never through a helper's
        // return value.
        let Some((seq, payload)) = unpack(&chunk[..chunk.len() - 1], &mut self.raw) else {
            return self.lose(chunk);
        };
        let frame = Frame {
            seq,
            offset,
            message: match postcard::from_bytes::<Message>(payload) {
                Ok(m) => m,
                Err(_) => return self.lose(chunk),
            },
        };
        // A header starts a new sequence (a new run or a reconnect).
        let restarts = matches!(frame.message, Message::Header(_) | Message::Hello { .. });
        if let (Some(last), false) = (self.last_seq, restarts) {
            if seq > last {
                self.stats.missing_frames += u64::from(seq - last - 1);
            }
        }
        self.last_seq = Some(seq);
        self.stats.frames += 1;
        on_frame(frame, chunk);
    }

    fn lose(&mut self, chunk: &[u8]) {
        self.stats.corrupt_frames += 1;
        self.stats.bytes_lost += chunk.len() as u64;
    }
}

/// The sequence number and postcard payload of a frame's COBS body (its bytes
/// before the delimiter), decoded into `raw`, if version and CRC check out.
fn unpack<'a>(body: &[u8], raw: &'a mut [u8]) -> Option<(u32, &'a [u8])> {
    // No encoder writes a longer frame, however the bytes arrive; the bound
    // also keeps the decoded frame inside `raw`.
    if body.len() >= MAX_FRAME {
        return None;
    }
    let n = unstuff(body, raw)?;
    let raw = &raw[..n];
    if n < 9 || raw[0] != PROTOCOL_VERSION {
        return None;
    }
    let (data, crc) = raw.split_at(n - 4);
    if crc32fast::hash(data).to_le_bytes() != crc {
        return None;
    }
    Some((u32::from_le_bytes(data[1..5].try_into().unwrap()), &data[5..]))
}

/// COBS-decodes a frame's body (no zero byte in it, delimiter removed) into
/// `out`, which must be at least as long; `None` where a run overruns the
/// body. Accepts and yields exactly what `cobs::decode` does, but copies each
/// run whole where that crate steps a state machine through every byte.
fn unstuff(body: &[u8], out: &mut [u8]) -> Option<usize> {
    if body.is_empty() {
        return None;
    }
    let (mut i, mut n) = (0, 0);
    while i < body.len() {
        let code = usize::from(body[i]);
        let run = body.get(i + 1..i + code)?;
        out[n..n + run.len()].copy_from_slice(run);
        n += run.len();
        i += code;
        // A code of 0xFF marks a full run with no zero after it.
        if code != 0xFF && i < body.len() {
            out[n] = 0;
            n += 1;
        }
    }
    Some(n)
}

/// Decodes a whole byte buffer (a stored log, a test stream).
pub fn decode_all(bytes: &[u8]) -> (Vec<Frame>, DecodeStats) {
    let mut dec = FrameDecoder::new();
    // Sized once: each frame takes half a kilobyte here, so a log of millions
    // is not copied over as the vector grows. A frame that decodes is at
    // least 12 bytes (9 of header and CRC, a payload byte, the COBS code, the
    // delimiter).
    let delimiters = bytes.iter().filter(|&&b| b == 0).count();
    let mut frames = Vec::with_capacity(delimiters.min(bytes.len() / 12));
    dec.push(bytes, |f, _| frames.push(f));
    dec.finish();
    (frames, dec.stats)
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ProbeSet, Probs, Record, MAX_CLASSES};

    fn record(sample: u32, k: usize) -> Record {
        let mut probs = Probs::new();
        for i in 0..k {
            probs.push(1.0 / k as f32 + i as f32 * 1e-7).unwrap();
        }
        Record {
            set: ProbeSet::Clean,
            sample,
            label: 3,
            prediction: (k - 1) as u16,
            confidence: probs[k - 1],
            p_true: probs[3],
            cue: None,
            probs: Some(Box::new(probs)),
        }
    }

    fn stream(n: u32, k: usize) -> Vec<u8> {
        let mut enc = FrameEncoder::new();
        let mut out = Vec::new();
        for i in 0..n {
            out.extend_from_slice(enc.encode(&Message::Record(record(i, k))).unwrap());
        }
        out
    }

    #[test]
    fn round_trip_is_lossless_for_full_vectors() {
        let bytes = stream(5, MAX_CLASSES);
        let (frames, stats) = decode_all(&bytes);
        assert!(stats.is_clean(), "{stats:?}");
        assert_eq!(frames.len(), 5);
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(f.seq, i as u32);
            // Bit-exact f32s: the probability encoding adds no error at all.
            assert_eq!(f.message, Message::Record(record(i as u32, MAX_CLASSES)));
        }
    }

    #[test]
    fn top1_record_is_a_few_tens_of_bytes() {
        let mut r = record(123_456, 10);
        r.probs = None;
        let mut enc = FrameEncoder::new();
        let n = enc.encode(&Message::Record(r)).unwrap().len();
        assert!(n <= 32, "top-1 record frame is {n} bytes");
    }

    #[test]
    fn flipped_byte_loses_one_frame_and_resyncs() {
        let mut bytes = stream(10, 16);
        let frame_len = bytes.len() / 10;
        bytes[frame_len * 4 + 7] ^= 0x5a;
        let (frames, stats) = decode_all(&bytes);
        assert_eq!(frames.len(), 9);
        assert_eq!(stats.corrupt_frames, 1);
        assert_eq!(stats.missing_frames, 1);
        assert!(frames.iter().all(|f| f.seq != 4));
    }

    #[test]
    fn offsets_locate_frames_and_the_gaps_damage_left() {
        let mut bytes = stream(4, 16);
        let ends: Vec<u64> = bytes.iter().enumerate().filter(|(_, &b)| b == 0).map(|(i, _)| i as u64 + 1).collect();
        bytes[ends[1] as usize + 3] ^= 0x5a;
        let (frames, _) = decode_all(&bytes);
        let offsets: Vec<u64> = frames.iter().map(|f| f.offset).collect();
        // Frame 2 (bytes ends[1]..ends[2]) is the gap.
        assert_eq!(offsets, [0, ends[0], ends[2]]);
        // However the bytes arrive.
        let mut dec = FrameDecoder::new();
        let mut pieces = Vec::new();
        for piece in bytes.chunks(7) {
            dec.push(piece, |f, _| pieces.push(f.offset));
        }
        assert_eq!(pieces, offsets);
    }

    #[test]
    fn injected_delimiter_and_garbage_never_invent_records() {
        let mut bytes = stream(6, 16);
        bytes[20] = 0;
        bytes.splice(60..60, [0xde, 0xad, 0x00, 0x00, 0xbe, 0xef].iter().copied());
        let (frames, stats) = decode_all(&bytes);
        assert!(frames.len() <= 5 && frames.len() >= 4, "{}", frames.len());
        for f in &frames {
            assert_eq!(f.message, Message::Record(record(f.seq, 16)));
        }
        assert!(stats.corrupt_frames >= 1);
    }

    #[test]
    fn torn_tail_is_reported() {
        let bytes = stream(3, 16);
        let (frames, stats) = decode_all(&bytes[..bytes.len() - 10]);
        assert_eq!(frames.len(), 2);
        assert!(stats.truncated_tail);
    }

    #[test]
    fn endless_garbage_is_bounded() {
        let garbage = vec![0x41u8; MAX_FRAME * 3];
        let mut bytes = garbage.clone();
        bytes.push(0);
        bytes.extend(stream(2, 16));
        let (frames, stats) = decode_all(&bytes);
        assert_eq!(frames.len(), 2);
        assert_eq!(stats.bytes_lost, garbage.len() as u64 + 1);
    }

    #[test]
    fn unstuff_agrees_with_the_cobs_crate() {
        // Encoded frames of every run shape, and noise (which is mostly invalid).
        let mut x = 0x9e37_79b9_u32;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        for len in [0, 1, 2, 253, 254, 255, 256, 508, 509, 1000] {
            for zeros in [0, 1, 7] {
                let mut raw: Vec<u8> = (0..len).map(|_| (next() % 255 + 1) as u8).collect();
                for _ in 0..zeros.min(len) {
                    let i = next() as usize % len;
                    raw[i] = 0;
                }
                let mut enc = vec![0; len + len / 254 + 2];
                let n = cobs::encode(&raw, &mut enc);
                bodies.push(enc[..n].to_vec());
            }
        }
        for len in 1..300 {
            bodies.push((0..len).map(|_| (next() % 255 + 1) as u8).collect());
        }
        for body in &bodies {
            let (mut a, mut b) = (vec![0; body.len()], vec![0; body.len()]);
            let ours = unstuff(body, &mut a).map(|n| &a[..n]);
            let theirs = cobs::decode(body, &mut b).ok().map(|n| &b[..n]);
            assert_eq!(ours, theirs, "{body:?}");
        }
    }

    #[test]
    fn oversized_frame_is_refused_however_it_arrives() {
        // A frame no encoder could write (the payload is over MAX_PAYLOAD)
        // with a valid CRC: refused in one read as in many.
        let mut raw = vec![0; 2 * MAX_PAYLOAD];
        raw[0] = PROTOCOL_VERSION;
        let n = postcard::to_slice(&Message::Hello { token: "x".repeat(MAX_PAYLOAD + 10) }, &mut raw[5..]).unwrap().len();
        raw.truncate(5 + n);
        raw.extend(crc32fast::hash(&raw).to_le_bytes());
        let mut bytes = vec![0; raw.len() + raw.len() / 254 + 2];
        let n = cobs::encode(&raw, &mut bytes);
        bytes.truncate(n);
        bytes.push(0);
        let (frames, whole) = decode_all(&bytes);
        assert!(frames.is_empty());
        let mut dec = FrameDecoder::new();
        for piece in bytes.chunks(100) {
            dec.push(piece, |_, _| panic!("an oversized frame was accepted"));
        }
        dec.finish();
        assert_eq!(dec.stats, whole);
        assert_eq!(whole.corrupt_frames, 1);
        assert_eq!(whole.bytes_lost, bytes.len() as u64);
    }
    #[test]
    fn frames_match_the_recorded_bytes() {
        // Recorded from an earlier build: how the types lie in memory (boxed
        // fields, alignment) must not change the wire. (Protocols 4 and 5
        // changed only the version byte and so the CRC, whose zero byte moves
        // a COBS code: these payloads are protocol 3's.)
        let mut r = record(77, 4);
        r.cue = Some(9);
        let mut top1 = record(1_000_000, 4);
        top1.set = ProbeSet::Corruption { corruption: 14, severity: 5 };
        top1.probs = None;
        let mut enc = FrameEncoder::new();
        let mut hex = String::new();
        for m in [Message::Record(r), Message::Record(top1)] {
            for b in enc.encode(&m).unwrap() {
                hex.push_str(&format!("{b:02x}"));
            }
        }
        assert_eq!(
            hex,
            "02050101010202054d03030a04803e0a07803e010901040104803e0304803e0704803e0a03803e0480c38600\
             03050101010b02010e05c0843d03030a04803e0a03803e0105580af21e00"
        );
    }

    #[test]
    fn oversized_message_is_refused() {
        let mut enc = FrameEncoder::new();
        let big = Message::Hello { token: "x".repeat(MAX_PAYLOAD + 10) };
        assert_eq!(enc.encode(&big), Err(EncodeError::TooLarge));
    }
}
