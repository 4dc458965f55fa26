//! Write a volume as NIfTI-1 (`.nii`, `.nii.gz`) or NumPy (`.npy`), for researchers and tests.
//!
//! - NIfTI: voxel `(i, j, k)` is (column, row, slice); the data are not flipped. The
//!   sform is the exact voxel-to-RAS affine (DICOM's LPS with x and y negated, as
//!   dcm2niix writes it); the qform is the same rotation as a quaternion, using the
//!   image normal for the third axis (a gantry tilt is only exact in the sform).
//! - NumPy: shape `(slices, rows, columns)` in C order, the same indexing as
//!   [`Volume::hu`]; slice 0 is the lowest position along the slice normal.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::geometry::{cross, Geometry};
use super::{Error, Result, Volume};

/// Sample type of the written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SampleType {
    /// int16 when every value is an integer in range (lossless), else float32.
    #[default]
    Auto,
    /// Rounded and clamped to int16.
    Int16,
    /// float32, exactly the volume's values.
    Float32,
}

/// File formats, chosen from the output name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Nifti { gzip: bool },
    Npy,
}

impl Format {
    /// The format a file name asks for: `.nii`, `.nii.gz` or `.npy`.
    pub fn from_path(path: &Path) -> Result<Self> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        match () {
            _ if name.ends_with(".nii.gz") => Ok(Format::Nifti { gzip: true }),
            _ if name.ends_with(".nii") => Ok(Format::Nifti { gzip: false }),
            _ if name.ends_with(".npy") => Ok(Format::Npy),
            _ => Err(Error::UnknownFormat {
                path: path.to_owned(),
            }),
        }
    }
}

/// Writes `volume` to `path` in the format its name asks for; returns the sample type used.
pub fn write(volume: &Volume, path: &Path, sample_type: SampleType) -> Result<SampleType> {
    let format = Format::from_path(path)?;
    let resolved = resolve(volume, sample_type);
    let io = |source| Error::Write {
        path: PathBuf::from(path),
        source,
    };
    let file = BufWriter::new(File::create(path).map_err(io)?);
    match format {
        Format::Npy => write_npy(volume, resolved, file).map_err(io)?,
        Format::Nifti { gzip: false } => write_nifti(volume, resolved, file).map_err(io)?,
        Format::Nifti { gzip: true } => {
            let encoder = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
            write_nifti(volume, resolved, encoder).map_err(io)?
        }
    }
    Ok(resolved)
}

fn resolve(volume: &Volume, sample_type: SampleType) -> SampleType {
    let fits = |v: &f32| v.fract() == 0.0 && (i16::MIN as f32..=i16::MAX as f32).contains(v);
    match sample_type {
        SampleType::Auto
            if volume
                .hu
                .as_standard_layout()
                .as_slice()
                .is_some_and(|v| v.par_iter().all(fits)) =>
        {
            SampleType::Int16
        }
        SampleType::Auto => SampleType::Float32,
        other => other,
    }
}

/// The voxels in C order (column fastest) as little-endian bytes, converted in parallel.
fn write_samples(
    volume: &Volume,
    sample_type: SampleType,
    out: &mut impl Write,
) -> std::io::Result<()> {
    const CHUNK: usize = 1 << 16;
    let hu = volume.hu.as_standard_layout();
    let values = hu
        .as_slice()
        .expect("a standard-layout array is contiguous. This is a bug.");
    let width = if sample_type == SampleType::Float32 {
        4
    } else {
        2
    };
    let mut bytes = vec![0u8; values.len() * width];
    bytes
        .par_chunks_mut(CHUNK * width)
        .zip(values.par_chunks(CHUNK))
        .for_each(|(out, values)| {
            for (out, &v) in out.chunks_exact_mut(width).zip(values) {
                match sample_type {
                    SampleType::Float32 => out.copy_from_slice(&v.to_le_bytes()),
                    // `as` saturates; values that auto chose int16 for are integers already.
                    SampleType::Auto | SampleType::Int16 => {
                        out.copy_from_slice(&(v.round() as i16).to_le_bytes())
                    }
                }
            }
        });
    out.write_all(&bytes)
}

fn write_npy(volume: &Volume, sample_type: SampleType, mut out: impl Write) -> std::io::Result<()> {
    let descr = if sample_type == SampleType::Float32 {
        "<f4"
    } else {
        "<i2"
    };
    let (k, j, i) = volume.hu.dim();
    let dict =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({k}, {j}, {i}), }}");
    // Magic (6) + version (2) + length (2) + dict + padding + newline, a multiple of 64.
    let padded = (10 + dict.len() + 1).div_ceil(64) * 64 - 10;
    let header = format!("{dict:<width$}\n", width = padded - 1);
    out.write_all(b"\x93NUMPY\x01\x00")?;
    out.write_all(&(header.len() as u16).to_le_bytes())?;
    out.write_all(header.as_bytes())?;
    write_samples(volume, sample_type, &mut out)?;
    out.flush()
}

fn write_nifti(
    volume: &Volume,
    sample_type: SampleType,
    mut out: impl Write,
) -> std::io::Result<()> {
    out.write_all(&nifti_header(volume, sample_type))?;
    out.write_all(&[0; 4])?; // no extensions
    write_samples(volume, sample_type, &mut out)?;
    out.flush()
}

/// The 348-byte NIfTI-1 header.
fn nifti_header(volume: &Volume, sample_type: SampleType) -> Vec<u8> {
    let mut h = Header(vec![0; 348]);
    let (k, j, i) = volume.hu.dim();
    let (datatype, bitpix) = if sample_type == SampleType::Float32 {
        (16, 32)
    } else {
        (4, 16)
    };
    let g = &volume.geometry;
    let (quaternion, qfac) = quaternion(&ras_rotation(g));
    h.i32(0, 348);
    h.u8(38, b'r');
    for (n, d) in [3, i, j, k, 1, 1, 1, 1].into_iter().enumerate() {
        h.i16(40 + 2 * n, d.min(i16::MAX as usize) as i16);
    }
    h.i16(70, datatype);
    h.i16(72, bitpix);
    for (n, p) in [qfac, g.spacing[2], g.spacing[1], g.spacing[0], 1.0]
        .into_iter()
        .enumerate()
    {
        h.f32(76 + 4 * n, p);
    }
    h.f32(108, 352.0); // vox_offset
    h.f32(112, 1.0); // scl_slope
    h.u8(123, 2); // xyzt_units: millimetres
    h.bytes(148, b"pulmo convert: Hounsfield units");
    h.i16(252, 1); // qform_code: scanner
    h.i16(254, 1); // sform_code: scanner
    let origin = ras(g.origin);
    for n in 0..3 {
        h.f32(256 + 4 * n, quaternion[n]);
        h.f32(268 + 4 * n, origin[n]);
    }
    for (row, values) in sform(g).iter().enumerate() {
        for (n, v) in values.iter().enumerate() {
            h.f32(280 + 16 * row + 4 * n, *v);
        }
    }
    h.bytes(344, b"n+1\0");
    h.0
}

/// LPS to RAS: negate x and y.
fn ras(v: [f64; 3]) -> [f64; 3] {
    [-v[0], -v[1], v[2]]
}

/// Rows of the voxel `(i, j, k)` to RAS (mm) affine.
fn sform(g: &Geometry) -> [[f64; 4]; 3] {
    let columns = [
        ras(g.row_direction).map(|v| v * g.spacing[2]),
        ras(g.column_direction).map(|v| v * g.spacing[1]),
        ras(g.slice_direction).map(|v| v * g.spacing[0]),
    ];
    let origin = ras(g.origin);
    std::array::from_fn(|r| [columns[0][r], columns[1][r], columns[2][r], origin[r]])
}

/// The rotation part for the qform: row, column, and the normal on the slices' side.
fn ras_rotation(g: &Geometry) -> [[f64; 3]; 3] {
    let normal = cross(g.row_direction, g.column_direction);
    let side = super::geometry::dot(normal, g.slice_direction).signum();
    let axes = [
        ras(g.row_direction),
        ras(g.column_direction),
        ras(normal.map(|v| v * side)),
    ];
    std::array::from_fn(|r| [axes[0][r], axes[1][r], axes[2][r]])
}

/// NIfTI's quaternion (b, c, d) and qfac for a rotation (or rotation with one flip).
fn quaternion(m: &[[f64; 3]; 3]) -> ([f64; 3], f64) {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    let qfac = if det < 0.0 { -1.0 } else { 1.0 };
    let r: [[f64; 3]; 3] = std::array::from_fn(|i| [m[i][0], m[i][1], m[i][2] * qfac]);
    let a = r[0][0] + r[1][1] + r[2][2] + 1.0;
    let (a, b, c, d) = if a > 0.5 {
        let a = 0.5 * a.sqrt();
        (
            a,
            0.25 * (r[2][1] - r[1][2]) / a,
            0.25 * (r[0][2] - r[2][0]) / a,
            0.25 * (r[1][0] - r[0][1]) / a,
        )
    } else {
        largest_diagonal_quaternion(&r)
    };
    let sign = if a < 0.0 { -1.0 } else { 1.0 };
    ([b * sign, c * sign, d * sign], qfac)
}

/// nifti1_io's branch for rotations near 180 degrees.
fn largest_diagonal_quaternion(r: &[[f64; 3]; 3]) -> (f64, f64, f64, f64) {
    let (xd, yd, zd) = (
        1.0 + r[0][0] - (r[1][1] + r[2][2]),
        1.0 + r[1][1] - (r[0][0] + r[2][2]),
        1.0 + r[2][2] - (r[0][0] + r[1][1]),
    );
    if xd > 1.0 {
        let b = 0.5 * xd.sqrt();
        (
            0.25 * (r[2][1] - r[1][2]) / b,
            b,
            0.25 * (r[0][1] + r[1][0]) / b,
            0.25 * (r[0][2] + r[2][0]) / b,
        )
    } else if yd > 1.0 {
        let c = 0.5 * yd.sqrt();
        (
            0.25 * (r[0][2] - r[2][0]) / c,
            0.25 * (r[0][1] + r[1][0]) / c,
            c,
            0.25 * (r[1][2] + r[2][1]) / c,
        )
    } else {
        let d = 0.5 * zd.sqrt();
        (
            0.25 * (r[1][0] - r[0][1]) / d,
            0.25 * (r[0][2] + r[2][0]) / d,
            0.25 * (r[1][2] + r[2][1]) / d,
            d,
        )
    }
}

/// A little-endian byte buffer written at fixed offsets.
struct Header(Vec<u8>);

impl Header {
    fn bytes(&mut self, at: usize, value: &[u8]) {
        self.0[at..at + value.len()].copy_from_slice(value);
    }
    fn u8(&mut self, at: usize, value: u8) {
        self.0[at] = value;
    }
    fn i16(&mut self, at: usize, value: i16) {
        self.bytes(at, &value.to_le_bytes());
    }
    fn i32(&mut self, at: usize, value: i32) {
        self.bytes(at, &value.to_le_bytes());
    }
    fn f32(&mut self, at: usize, value: f64) {
        self.bytes(at, &(value as f32).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_rotation_has_a_zero_quaternion() {
        let (q, qfac) = quaternion(&[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
        assert_eq!((q, qfac), ([0.0, 0.0, 0.0], 1.0));
    }

    #[test]
    fn axial_lps_becomes_a_180_degree_turn_about_z_in_ras() {
        let g = Geometry::axial([-100.0, -120.0, 50.0], [2.5, 0.7, 0.8]);
        let (q, qfac) = quaternion(&ras_rotation(&g));
        assert_eq!(qfac, 1.0);
        assert!(
            (q[2].abs() - 1.0).abs() < 1e-12 && q[0].abs() < 1e-12 && q[1].abs() < 1e-12,
            "{q:?}"
        );
        let s = sform(&g);
        assert_eq!(s[0], [-0.8, 0.0, 0.0, 100.0]);
        assert_eq!(s[1], [0.0, -0.7, 0.0, 120.0]);
        assert_eq!(s[2], [0.0, 0.0, 2.5, 50.0]);
    }

    #[test]
    fn format_follows_the_file_name() {
        assert_eq!(
            Format::from_path(Path::new("a/b.NII.gz")).unwrap(),
            Format::Nifti { gzip: true }
        );
        assert_eq!(
            Format::from_path(Path::new("b.nii")).unwrap(),
            Format::Nifti { gzip: false }
        );
        assert_eq!(Format::from_path(Path::new("b.npy")).unwrap(), Format::Npy);
        assert!(Format::from_path(Path::new("b.png")).is_err());
    }
}
