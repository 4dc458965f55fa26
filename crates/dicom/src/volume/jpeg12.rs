//! 12-bit JPEG (DICOM "JPEG Extended", process 2 & 4) through libjpeg-turbo 3.
//!
//! jpeg-decoder, which dicom-pixeldata uses for JPEG, decodes 8-bit lossy and lossless
//! JPEG but not 12-bit lossy; older CT scanners and archives wrote exactly that. libjpeg-turbo
//! 3 decodes it (`tj3Decompress12`); turbojpeg-sys builds it from source with the venv's
//! CMake and links it statically (decision 0005). This module is the only `unsafe` FFI in
//! pulmo: one handle per call, destroyed on every path, sizes checked against the DICOM
//! header before anything is written.

use std::ffi::CStr;
use std::fmt;

use turbojpeg_sys as tj;

/// What went wrong decoding a 12-bit JPEG frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Jpeg12Error {
    /// libjpeg-turbo refused the stream; its message.
    Codec(String),
    /// The stream's size or precision is not what the DICOM header implies.
    Mismatch {
        what: &'static str,
        expected: usize,
        stream: usize,
    },
}

impl fmt::Display for Jpeg12Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Jpeg12Error::Codec(message) => write!(f, "libjpeg-turbo: {message}"),
            Jpeg12Error::Mismatch {
                what,
                expected,
                stream,
            } => write!(f, "JPEG stream has {what} {stream}, {expected} expected"),
        }
    }
}

impl std::error::Error for Jpeg12Error {}

/// A decompressor handle, destroyed on drop.
struct Handle(tj::tjhandle);

impl Handle {
    fn new() -> Result<Self, Jpeg12Error> {
        // SAFETY: tj3Init has no preconditions; a null return is handled.
        let raw = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as i32) };
        if raw.is_null() {
            return Err(Jpeg12Error::Codec("could not create a decompressor".into()));
        }
        Ok(Handle(raw))
    }

    fn get(&self, param: tj::TJPARAM) -> usize {
        // SAFETY: the handle is live; tj3Get only reads it.
        unsafe { tj::tj3Get(self.0, param as i32) }.max(0) as usize
    }

    /// The handle's last error as a codec error.
    fn error(&self) -> Jpeg12Error {
        // SAFETY: tj3GetErrorStr returns a NUL-terminated string owned by the handle,
        // valid until the next call on it; it is copied at once.
        let message = unsafe { CStr::from_ptr(tj::tj3GetErrorStr(self.0)) };
        Jpeg12Error::Codec(message.to_string_lossy().into_owned())
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed exactly once.
        unsafe { tj::tj3Destroy(self.0) }
    }
}

/// Decodes one 12-bit greyscale JPEG frame of `rows` × `columns` into `out` (row-major,
/// the 12-bit samples as stored; the caller applies BitsStored, sign and rescale).
pub fn decode(
    jpeg: &[u8],
    rows: usize,
    columns: usize,
    out: &mut [u16],
) -> Result<(), Jpeg12Error> {
    let handle = Handle::new()?;
    // SAFETY: the pointer and length describe `jpeg`, which outlives the call.
    if unsafe { tj::tj3DecompressHeader(handle.0, jpeg.as_ptr(), jpeg.len() as _) } != 0 {
        return Err(handle.error());
    }
    let check = |what, expected: usize, stream: usize| {
        if expected == stream {
            Ok(())
        } else {
            Err(Jpeg12Error::Mismatch {
                what,
                expected,
                stream,
            })
        }
    };
    check("precision", 12, handle.get(tj::TJPARAM_TJPARAM_PRECISION))?;
    check(
        "columns",
        columns,
        handle.get(tj::TJPARAM_TJPARAM_JPEGWIDTH),
    )?;
    check("rows", rows, handle.get(tj::TJPARAM_TJPARAM_JPEGHEIGHT))?;
    check("samples", rows * columns, out.len())?;
    // SAFETY: `out` holds rows × columns samples, as just checked against the stream's own
    // size; the pitch is one row of one-sample pixels; u16 and c_short share a layout and
    // 12-bit samples are non-negative.
    let status = unsafe {
        tj::tj3Decompress12(
            handle.0,
            jpeg.as_ptr(),
            jpeg.len() as _,
            out.as_mut_ptr().cast(),
            columns as i32,
            tj::TJPF_TJPF_GRAY,
        )
    };
    if status != 0 {
        return Err(handle.error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_a_codec_error_not_a_crash() {
        let mut out = vec![0u16; 4];
        assert!(matches!(
            decode(b"not a jpeg at all", 2, 2, &mut out),
            Err(Jpeg12Error::Codec(_))
        ));
        assert!(matches!(
            decode(&[], 2, 2, &mut out),
            Err(Jpeg12Error::Codec(_))
        ));
    }
}
