//! An instance's frames as WADO-RS answers them: native frames cut from Pixel Data
//! (1-bit frames re-packed to start on a byte), encapsulated frames as their fragments,
//! or decoded to uncompressed samples when the client asks for those.

use dicom_core::value::Value as DicomValue;
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::PixelDecoder;

/// Why frames could not be given.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("it has no pixel data")]
    NoPixelData,
    #[error("it has no frame {frame} (it has {count})")]
    NoFrame { frame: u32, count: u32 },
    #[error("its pixel data do not match its rows, columns and samples")]
    Inconsistent,
    #[error("frame {frame} could not be decoded to uncompressed samples")]
    Decode { frame: u32 },
    #[error("the frames asked for come to more than {MAX_ANSWER_BYTES} bytes; ask for fewer")]
    TooLarge,
}

/// The most bytes of frames one answer holds (it is built in memory).
pub const MAX_ANSWER_BYTES: usize = 512 << 20;

/// The media type of a compressed transfer syntax's frames (PS3.18 Table 8.7.3-2), or
/// `None` for a native one.
pub fn media_type(syntax: &str) -> Option<&'static str> {
    Some(match syntax {
        "1.2.840.10008.1.2.4.50"
        | "1.2.840.10008.1.2.4.51"
        | "1.2.840.10008.1.2.4.57"
        | "1.2.840.10008.1.2.4.70" => "image/jpeg",
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "image/jls",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "image/jp2",
        "1.2.840.10008.1.2.4.201" | "1.2.840.10008.1.2.4.202" | "1.2.840.10008.1.2.4.203" => {
            "image/jphc"
        }
        "1.2.840.10008.1.2.5" => "image/dicom-rle",
        _ => return None,
    })
}

/// The bytes of each frame in `wanted` (1-based), as stored, or decoded to uncompressed
/// samples when `decode` (for encapsulated Pixel Data).
pub fn extract(
    obj: &DefaultDicomObject,
    wanted: &[u32],
    decode: bool,
) -> Result<Vec<Vec<u8>>, Error> {
    let count = uint(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1);
    if let Some(&frame) = wanted.iter().find(|f| **f == 0 || **f > count) {
        return Err(Error::NoFrame { frame, count });
    }
    let pixels = obj.get(tags::PIXEL_DATA).ok_or(Error::NoPixelData)?;
    let frame = |index: u32| match pixels.value() {
        DicomValue::Primitive(value) => native(obj, &value.to_bytes(), index),
        DicomValue::PixelSequence(_) if decode => decoded(obj, index),
        DicomValue::PixelSequence(seq) => {
            encapsulated(seq.fragments(), seq.offset_table(), count, index)
        }
        DicomValue::Sequence(_) => Err(Error::NoPixelData),
    };
    let mut total = 0;
    let mut frames = Vec::with_capacity(wanted.len());
    for &number in wanted {
        let bytes = frame(number - 1)?;
        total += bytes.len();
        if total > MAX_ANSWER_BYTES {
            return Err(Error::TooLarge);
        }
        frames.push(bytes);
    }
    Ok(frames)
}

/// Frame `index` (0-based) of native Pixel Data.
fn native(obj: &DefaultDicomObject, bytes: &[u8], index: u32) -> Result<Vec<u8>, Error> {
    let rows = uint(obj, tags::ROWS).ok_or(Error::Inconsistent)? as u64;
    let columns = uint(obj, tags::COLUMNS).ok_or(Error::Inconsistent)? as u64;
    let samples = uint(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1) as u64;
    let bits = uint(obj, tags::BITS_ALLOCATED).ok_or(Error::Inconsistent)? as u64;
    let frame_bits = rows * columns * samples * bits;
    let start = index as u64 * frame_bits;
    let end = start + frame_bits;
    if end.div_ceil(8) > bytes.len() as u64 {
        return Err(Error::Inconsistent);
    }
    if start % 8 == 0 && frame_bits % 8 == 0 {
        return Ok(bytes[(start / 8) as usize..(end / 8) as usize].to_vec());
    }
    // 1-bit frames (segmentations) need not start on a byte: re-pack this one's bits.
    let mut out = vec![0u8; frame_bits.div_ceil(8) as usize];
    for bit in 0..frame_bits {
        let from = start + bit;
        if bytes[(from / 8) as usize] >> (from % 8) & 1 == 1 {
            out[(bit / 8) as usize] |= 1 << (bit % 8);
        }
    }
    Ok(out)
}

/// Frame `index` of encapsulated Pixel Data: one fragment per frame, the fragments the
/// basic offset table assigns to it, or all of them for a single frame.
fn encapsulated(
    fragments: &[Vec<u8>],
    table: &[u32],
    count: u32,
    index: u32,
) -> Result<Vec<u8>, Error> {
    if fragments.len() == count as usize {
        return Ok(fragments[index as usize].clone());
    }
    if count == 1 {
        return Ok(fragments.concat());
    }
    if table.len() != count as usize {
        return Err(Error::Inconsistent);
    }
    // Offsets count each fragment's 8-byte item header.
    let (from, to) = (
        table[index as usize] as u64,
        table.get(index as usize + 1).map(|t| *t as u64),
    );
    let mut at = 0u64;
    let mut frame = Vec::new();
    for fragment in fragments {
        if at >= from && to.is_none_or(|to| at < to) {
            frame.extend_from_slice(fragment);
        }
        at += fragment.len() as u64 + 8;
    }
    if frame.is_empty() {
        return Err(Error::Inconsistent);
    }
    Ok(frame)
}

/// Frame `index` decoded to uncompressed samples. Some codecs panic on inconsistent
/// input; that is bad data, not a crash.
fn decoded(obj: &DefaultDicomObject, index: u32) -> Result<Vec<u8>, Error> {
    let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        obj.decode_pixel_data_frame(index)
            .map(|d| d.data().to_vec())
    }));
    match attempt {
        Ok(Ok(bytes)) => Ok(bytes),
        _ => Err(Error::Decode { frame: index + 1 }),
    }
}

fn uint(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<u32> {
    obj.get(tag)?.to_int::<u32>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encapsulated_frames_follow_fragments_or_the_offset_table() {
        let fragments = vec![vec![1, 2], vec![3], vec![4, 5, 6]];
        assert_eq!(encapsulated(&fragments, &[], 3, 1).unwrap(), [3]);
        assert_eq!(
            encapsulated(&fragments, &[], 1, 0).unwrap(),
            [1, 2, 3, 4, 5, 6]
        );
        // Frame 0 is fragments 0 and 1 (10 + 9 bytes with headers), frame 1 fragment 2.
        assert_eq!(encapsulated(&fragments, &[0, 19], 2, 0).unwrap(), [1, 2, 3]);
        assert_eq!(encapsulated(&fragments, &[0, 19], 2, 1).unwrap(), [4, 5, 6]);
        assert!(encapsulated(&fragments, &[], 2, 1).is_err());
    }
}
