//! RLE Lossless (DICOM PS3.5 Annex G) decoded straight into sample planes.
//!
//! dicom-pixeldata decodes RLE too, but a byte at a time through `io::Read`, into a second
//! buffer that is then interleaved; on a 512² CT slice that made RLE series decode about
//! half as fast as pydicom's Rust plugin (docs/decisions/0005-rle-decoder.md). Here every
//! run is one `fill` and every literal one `copy_from_slice` into a plane per byte
//! significance, and the caller combines the planes with the modality LUT in one pass.
//! Malformed frames are errors naming what is wrong, never a panic or a short image.

use std::fmt;

/// Bytes in the RLE header: the segment count and fifteen segment offsets.
const HEADER_LEN: usize = 64;
/// Most segments a frame may have (PS3.5 G.5).
const MAX_SEGMENTS: usize = 15;

/// What is wrong with an RLE frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RleError {
    /// The fragment is shorter than the 64-byte RLE header.
    NoHeader { len: usize },
    /// The header's segment count differs from the one the pixel format needs.
    SegmentCount { found: u32, expected: usize },
    /// A segment offset points before the header, backwards, or past the fragment.
    BadOffset { segment: usize, offset: u32 },
    /// A segment ran out of input before it held a whole plane.
    ShortSegment {
        segment: usize,
        decoded: usize,
        expected: usize,
    },
}

impl fmt::Display for RleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RleError::NoHeader { len } => {
                write!(f, "RLE fragment of {len} bytes has no 64-byte header")
            }
            RleError::SegmentCount { found, expected } => write!(
                f,
                "RLE header lists {found} segments, the pixel format needs {expected}"
            ),
            RleError::BadOffset { segment, offset } => {
                write!(f, "RLE segment {segment} starts at invalid offset {offset}")
            }
            RleError::ShortSegment {
                segment,
                decoded,
                expected,
            } => write!(
                f,
                "RLE segment {segment} decodes to {decoded} bytes, {expected} expected"
            ),
        }
    }
}

impl std::error::Error for RleError {}

/// Decodes one RLE frame of single-sample pixels into `planes`: plane 0 receives the most
/// significant byte of every sample, the last plane the least significant (the segment
/// order of PS3.5 G.2). Every plane must be `rows * columns` long and is filled completely.
pub fn decode_planes(fragment: &[u8], planes: &mut [&mut [u8]]) -> Result<(), RleError> {
    if fragment.len() < HEADER_LEN {
        return Err(RleError::NoHeader {
            len: fragment.len(),
        });
    }
    let word = |i: usize| u32::from_le_bytes(fragment[4 * i..4 * i + 4].try_into().unwrap());
    let count = word(0);
    if count as usize != planes.len() || planes.len() > MAX_SEGMENTS {
        return Err(RleError::SegmentCount {
            found: count,
            expected: planes.len(),
        });
    }
    let n = planes.len();
    for (segment, plane) in planes.iter_mut().enumerate() {
        let start = word(segment + 1);
        let end = if segment + 1 < n {
            word(segment + 2) as usize
        } else {
            fragment.len()
        };
        let start_at = start as usize;
        if start_at < HEADER_LEN || start_at > end || end > fragment.len() {
            return Err(RleError::BadOffset {
                segment,
                offset: start,
            });
        }
        let decoded = unpack_bits(&fragment[start_at..end], plane);
        if decoded < plane.len() {
            return Err(RleError::ShortSegment {
                segment,
                decoded,
                expected: plane.len(),
            });
        }
    }
    Ok(())
}

/// PackBits into `out`: header byte n in 0..=127 copies the next n + 1 bytes, n in
/// -127..=-1 repeats the next byte 1 - n times, -128 does nothing. Stops when `out` is
/// full (encoders may pad a segment to even length) and returns how many bytes it wrote.
fn unpack_bits(input: &[u8], out: &mut [u8]) -> usize {
    let (mut i, mut o) = (0, 0);
    while o < out.len() && i < input.len() {
        let header = input[i] as i8;
        i += 1;
        if header >= 0 {
            let len = (header as usize + 1)
                .min(input.len() - i)
                .min(out.len() - o);
            out[o..o + len].copy_from_slice(&input[i..i + len]);
            i += header as usize + 1;
            o += len;
        } else if header != -128 {
            let Some(&value) = input.get(i) else { break };
            i += 1;
            let len = (1 - header as isize) as usize;
            let len = len.min(out.len() - o);
            out[o..o + len].fill(value);
            o += len;
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RLE frame with the given already-packed segments.
    fn frame(segments: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![0u8; HEADER_LEN];
        out[..4].copy_from_slice(&(segments.len() as u32).to_le_bytes());
        let mut offset = HEADER_LEN as u32;
        for (i, s) in segments.iter().enumerate() {
            out[4 * (i + 1)..4 * (i + 2)].copy_from_slice(&offset.to_le_bytes());
            offset += s.len() as u32;
        }
        for s in segments {
            out.extend_from_slice(s);
        }
        out
    }

    #[test]
    fn runs_literals_and_no_ops_unpack() {
        // literal [1 2 3], run of four 9s, no-op, literal [7]
        let packed = [2, 1, 2, 3, (-3i8) as u8, 9, 0x80, 0, 7];
        let mut out = [0u8; 8];
        assert_eq!(unpack_bits(&packed, &mut out), 8);
        assert_eq!(out, [1, 2, 3, 9, 9, 9, 9, 7]);
    }

    #[test]
    fn sixteen_bit_planes_come_most_significant_first() {
        let high: &[u8] = &[(-1i8) as u8, 0x01]; // two samples with high byte 0x01
        let low: &[u8] = &[1, 0x02, 0xff];
        let bytes = frame(&[high, low]);
        let (mut hi, mut lo) = ([0u8; 2], [0u8; 2]);
        decode_planes(&bytes, &mut [&mut hi, &mut lo]).unwrap();
        assert_eq!([hi, lo], [[1, 1], [2, 0xff]]);
    }

    #[test]
    fn padded_segments_stop_at_a_full_plane() {
        let bytes = frame(&[&[(-2i8) as u8, 5, 0]]); // three 5s then a pad byte
        let mut plane = [0u8; 3];
        decode_planes(&bytes, &mut [&mut plane]).unwrap();
        assert_eq!(plane, [5, 5, 5]);
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let mut plane = [0u8; 4];
        assert_eq!(
            decode_planes(&[0; 10], &mut [&mut plane]),
            Err(RleError::NoHeader { len: 10 })
        );
        let two = frame(&[&[0, 1], &[0, 1]]);
        assert!(matches!(
            decode_planes(&two, &mut [&mut plane]),
            Err(RleError::SegmentCount { found: 2, .. })
        ));
        let short = frame(&[&[1, 4, 4]]);
        assert_eq!(
            decode_planes(&short, &mut [&mut plane]),
            Err(RleError::ShortSegment {
                segment: 0,
                decoded: 2,
                expected: 4
            })
        );
        let mut bad = frame(&[&[0, 1]]);
        bad[4..8].copy_from_slice(&9999u32.to_le_bytes());
        assert!(matches!(
            decode_planes(&bad, &mut [&mut plane]),
            Err(RleError::BadOffset { segment: 0, .. })
        ));
        // a literal that claims more bytes than remain, and a run with no value byte
        assert!(decode_planes(&frame(&[&[100, 1]]), &mut [&mut plane]).is_err());
        assert!(decode_planes(&frame(&[&[0xfd]]), &mut [&mut plane]).is_err());
    }
}
