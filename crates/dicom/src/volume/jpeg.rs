//! The size a JPEG or JPEG-LS stream claims in its frame header, read before a decoder
//! allocates it.
//!
//! jpeg-decoder sizes its buffers from the stream's own frame header, whatever the DICOM
//! header says, so a 2 KB frame claiming 64544 × 16160 samples cost 1 GB and half a minute
//! before it failed (found by fuzzing). `decode` compares this size with Rows and Columns
//! first. Only marker segments are read, never entropy-coded data.

/// Start of image, and the markers that stand alone (no length follows them).
const SOI: u8 = 0xD8;
const TEM: u8 = 0x01;
const RST: std::ops::RangeInclusive<u8> = 0xD0..=0xD7;
/// Start of scan: the frame header comes before it or not at all.
const SOS: u8 = 0xDA;
/// JPEG-LS's frame header (SOF55), laid out as JPEG's.
const SOF55: u8 = 0xF7;

/// The (rows, columns) of the first frame header in `stream`, if it has one before its
/// first scan and the segments up to it have lengths (bytes between segments are skipped,
/// as the decoders do).
pub fn frame_size(stream: &[u8]) -> Option<(u16, u16)> {
    let mut at = 2;
    if stream.get(..at)? != [0xFF, SOI] {
        return None;
    }
    loop {
        if *stream.get(at)? != 0xFF {
            // jpeg-decoder skips whatever lies between segments up to the next marker, and
            // finds a frame header behind it (found by fuzzing): so does this walk.
            at += stream.get(at..)?.iter().position(|&b| b == 0xFF)?;
            continue;
        }
        let marker = *stream.get(at + 1)?;
        if marker == 0xFF {
            at += 1; // fill byte
            continue;
        }
        if marker == TEM || RST.contains(&marker) {
            at += 2;
            continue;
        }
        let length = usize::from(u16::from_be_bytes([
            *stream.get(at + 2)?,
            *stream.get(at + 3)?,
        ]));
        if is_frame_header(marker) {
            let rows = u16::from_be_bytes([*stream.get(at + 5)?, *stream.get(at + 6)?]);
            let columns = u16::from_be_bytes([*stream.get(at + 7)?, *stream.get(at + 8)?]);
            return Some((rows, columns));
        }
        if marker == SOS || length < 2 {
            return None;
        }
        at += 2 + length;
    }
}

/// End of image.
const EOI: u8 = 0xD9;

/// Whether `stream` ends with an EOI marker, after the padding that makes a fragment's
/// length even (a 00h, or an FFh fill byte).
pub fn ends_with_eoi(stream: &[u8]) -> bool {
    let end = stream
        .iter()
        .rposition(|&b| b != 0x00 && b != 0xFF)
        .map_or(0, |last| last + 1);
    stream[..end].ends_with(&[0xFF, EOI])
}

/// SOF0 to SOF15 (but DHT, JPG and DAC, which share the range) and JPEG-LS's SOF55.
fn is_frame_header(marker: u8) -> bool {
    matches!(marker, 0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC)) || marker == SOF55
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SOI, an APP0 segment, then a frame header of the given marker and size.
    fn stream(sof: u8, rows: u16, columns: u16) -> Vec<u8> {
        let mut s = vec![0xFF, SOI, 0xFF, 0xE0, 0x00, 0x04, b'J', b'F'];
        s.extend_from_slice(&[0xFF, sof, 0x00, 0x0B, 8]);
        s.extend_from_slice(&rows.to_be_bytes());
        s.extend_from_slice(&columns.to_be_bytes());
        s.extend_from_slice(&[1, 1, 0x11, 0]);
        s
    }

    #[test]
    fn a_stream_ends_with_eoi_before_its_padding_or_not_at_all() {
        assert!(ends_with_eoi(&[0xFF, SOI, 1, 2, 0xFF, EOI]));
        assert!(ends_with_eoi(&[0xFF, SOI, 1, 0xFF, EOI, 0x00]));
        assert!(ends_with_eoi(&[0xFF, SOI, 1, 0xFF, EOI, 0xFF]));
        assert!(!ends_with_eoi(&[0xFF, SOI, 1, 2, 3, 0x00]));
        assert!(!ends_with_eoi(&[0xFF, SOI, 0xFF, EOI, 7]));
        assert!(!ends_with_eoi(&[]));
        assert!(!ends_with_eoi(&[0xFF, 0xFF]));
    }

    #[test]
    fn the_frame_header_gives_rows_and_columns() {
        assert_eq!(frame_size(&stream(0xC0, 512, 256)), Some((512, 256)));
        assert_eq!(frame_size(&stream(0xC3, 32, 64)), Some((32, 64)));
        assert_eq!(frame_size(&stream(SOF55, 7, 9)), Some((7, 9)));
    }

    #[test]
    fn a_frame_header_behind_bytes_between_segments_is_found() {
        // An APP0 segment, garbage (no 0xFF), then the frame header: jpeg-decoder finds it.
        let mut garbage_first = stream(0xC3, 32288, 160);
        garbage_first.splice(8..8, [0x00, 0x30, 0x34, 0x12]);
        assert_eq!(frame_size(&garbage_first), Some((32288, 160)));
    }

    #[test]
    fn no_frame_header_before_the_scan_or_a_cut_stream_says_nothing() {
        let mut scan_first = vec![0xFF, SOI, 0xFF, SOS, 0x00, 0x02];
        scan_first.extend_from_slice(&stream(0xC0, 1, 1)[2..]);
        assert_eq!(frame_size(&scan_first), None);
        let whole = stream(0xC0, 512, 512);
        for cut in 0..whole.len() - 4 {
            assert_eq!(frame_size(&whole[..cut]), None, "{cut}");
        }
        assert_eq!(frame_size(b"not a JPEG"), None);
        // DHT shares the range of frame headers but is not one.
        assert_eq!(frame_size(&stream(0xC4, 1, 1)), None);
    }
}
