//! WADO-RS rendered images: one frame as PNG or JPEG, as a browser shows it. Greyscale
//! frames are decoded by pulmo-dicom to modality values (Hounsfield units for CT) and
//! windowed by `window=centre,width[,linear|sigmoid]`, else by the instance's own window,
//! else the lung window key images use; 8-bit RGB frames (key images) are shown as they are.

use std::io::Cursor;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use dicom_dictionary_std::tags;
use image::{DynamicImage, GrayImage, ImageFormat, RgbImage};
use pulmo_dicomweb::accept::{negotiate, Offer};
use serde::Deserialize;

use super::dicomweb::accept;
use super::error::ErrorBody;
use super::params::{FrameNumber, Frames, InstancePath, Query, Uids};
use super::wado::{not_acceptable, one, open};
use super::{ApiError, AppState};
use pulmo_core::report::images::{grey, WINDOW};

/// The query of a rendered image.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RenderParams {
    /// `centre,width` in modality units, then optionally `linear` (the default) or `sigmoid`.
    #[param(
        example = "-600,1500,linear",
        pattern = r"^-?[0-9]{1,6}(\.[0-9]{1,6})?,[0-9]{1,6}(\.[0-9]{1,6})?(,(linear|linear-exact|sigmoid))?$"
    )]
    window: Option<String>,
    /// JPEG quality, 1 to 100 (default 90).
    #[param(minimum = 1, maximum = 100)]
    quality: Option<u8>,
}

/// How grey levels are computed.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Window {
    centre: f32,
    width: f32,
    sigmoid: bool,
}

/// The first frame of an instance, rendered (WADO-RS).
#[utoipa::path(get, path = "/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered", tag = "dicomweb",
    params(InstancePath, RenderParams),
    responses((status = 200, description = "The frame as an image", content(("image/png"), ("image/jpeg"))),
              (status = 400, description = "A UID or the query is malformed", body = ErrorBody),
              (status = 404, description = "No such instance is served, or it has no image pulmo renders", body = ErrorBody),
              (status = 406, description = "The Accept header takes neither PNG nor JPEG", body = ErrorBody)))]
pub async fn render_instance(
    state: State<AppState>,
    uids: Uids<3>,
    headers: HeaderMap,
    query: Query<RenderParams>,
) -> Result<Response, ApiError> {
    render(state, uids, Frames(vec![1]), headers, query).await
}

/// One frame of an instance, rendered (WADO-RS).
#[utoipa::path(get, path = "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered", tag = "dicomweb",
    params(InstancePath, ("frames" = FrameNumber, Path, description = "One 1-based frame number"), RenderParams),
    responses((status = 200, description = "The frame as an image", content(("image/png"), ("image/jpeg"))),
              (status = 400, description = "A UID, the frame or the query is malformed", body = ErrorBody),
              (status = 404, description = "No such instance or frame, or no image pulmo renders", body = ErrorBody),
              (status = 406, description = "The Accept header takes neither PNG nor JPEG", body = ErrorBody)))]
pub async fn render_frame(
    state: State<AppState>,
    uids: Uids<3>,
    frames: Frames,
    headers: HeaderMap,
    query: Query<RenderParams>,
) -> Result<Response, ApiError> {
    if frames.0.len() != 1 {
        return Err(ApiError::BadRequest(
            "a rendered frame is one frame, not a list".to_owned(),
        ));
    }
    render(state, uids, frames, headers, query).await
}

async fn render(
    State(state): State<AppState>,
    uids: Uids<3>,
    Frames(frames): Frames,
    headers: HeaderMap,
    Query(params): Query<RenderParams>,
) -> Result<Response, ApiError> {
    let offers = [Offer::single("image/png"), Offer::single("image/jpeg")];
    let jpeg = negotiate(accept(&headers), &offers)
        .ok_or_else(|| not_acceptable("rendered images are image/png or image/jpeg"))?
        == 1;
    let asked = params.window.as_deref().map(parse_window).transpose()?;
    let quality = params.quality.unwrap_or(90);
    if !(1..=100).contains(&quality) {
        return Err(ApiError::BadRequest("quality is not 1 to 100".to_owned()));
    }
    let file = one(&state, uids.scope()).await?;
    let obj = open(file.path.clone(), true).await?;
    let frame = frames[0];
    let image = tokio::task::spawn_blocking(move || {
        let window = asked.or_else(|| own_window(&obj)).unwrap_or(Window {
            centre: WINDOW.0,
            width: WINDOW.1,
            sigmoid: false,
        });
        picture(&file.path, &obj, frame - 1, window)
    })
    .await??;
    let (bytes, media) = encode(image, jpeg, quality)?;
    Ok(([(header::CONTENT_TYPE, media)], bytes).into_response())
}

/// `centre,width[,function]`: decimal numbers of up to six digits before and after the
/// point (the width without a sign), as the OpenAPI pattern says.
fn parse_window(text: &str) -> Result<Window, ApiError> {
    let bad = || {
        ApiError::BadRequest(
            "window is not centre,width[,linear|linear-exact|sigmoid] (decimal numbers)".to_owned(),
        )
    };
    let fields: Vec<&str> = text.split(',').collect();
    let (Some(centre), Some(width)) = (
        fields.first().and_then(|f| decimal(f, true)),
        fields.get(1).and_then(|f| decimal(f, false)),
    ) else {
        return Err(bad());
    };
    let sigmoid = match fields.get(2).copied() {
        None | Some("linear") | Some("linear-exact") => false,
        Some("sigmoid") => true,
        Some(_) => return Err(bad()),
    };
    if fields.len() > 3 {
        return Err(bad());
    }
    Ok(Window {
        centre,
        width,
        sigmoid,
    })
}

/// `[-]digits[.digits]`, up to six digits each side.
fn decimal(text: &str, signed: bool) -> Option<f32> {
    let unsigned = if signed {
        text.strip_prefix('-').unwrap_or(text)
    } else {
        text
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, "1"));
    let digits = |d: &str| (1..=6).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit());
    (digits(whole) && digits(fraction))
        .then(|| text.parse().ok())
        .flatten()
}

/// The instance's first WindowCenter and WindowWidth, when it has both.
fn own_window(obj: &dicom_object::DefaultDicomObject) -> Option<Window> {
    let first = |tag| -> Option<f32> {
        let values = obj.get(tag)?.to_multi_float64().ok()?;
        values.first().map(|v| *v as f32).filter(|v| v.is_finite())
    };
    let (centre, width) = (first(tags::WINDOW_CENTER)?, first(tags::WINDOW_WIDTH)?);
    (width > 0.0).then_some(Window {
        centre,
        width,
        sigmoid: false,
    })
}

/// Frame `index` (0-based) of the file as an image: greyscale windowed, or RGB as stored.
fn picture(
    path: &std::path::Path,
    obj: &dicom_object::DefaultDicomObject,
    index: u32,
    window: Window,
) -> Result<DynamicImage, ApiError> {
    let samples = obj
        .get(tags::SAMPLES_PER_PIXEL)
        .and_then(|e| e.to_int::<u16>().ok());
    if samples == Some(3) {
        return rgb(path, index);
    }
    let (_, instance) = pulmo_dicom::ingest::read_file_header("the instance", path)
        .map_err(|err| cannot_render(&err))?;
    let count = instance.pixel.number_of_frames.max(1);
    if index >= count {
        return Err(ApiError::NotFound(format!(
            "the instance has no frame {} (it has {count})",
            index + 1
        )));
    }
    let values =
        pulmo_dicom::volume::decode_frame(&instance, index).map_err(|err| cannot_render(&err))?;
    let (rows, columns) = values.dim();
    let pixels = values.iter().map(|v| level(*v, window)).collect();
    let image = GrayImage::from_raw(columns as u32, rows as u32, pixels)
        .expect("one grey level per decoded pixel. This is a bug.");
    Ok(DynamicImage::ImageLuma8(image))
}

fn level(value: f32, window: Window) -> u8 {
    if !window.sigmoid {
        return grey(value, (window.centre, window.width));
    }
    let y = 255.0 / (1.0 + (-4.0 * (value - window.centre) / window.width).exp());
    y.clamp(0.0, 255.0) as u8
}

/// An 8-bit RGB frame (pixel-interleaved or by plane) as it is.
fn rgb(path: &std::path::Path, index: u32) -> Result<DynamicImage, ApiError> {
    use dicom_pixeldata::{PixelDecoder, PlanarConfiguration};
    let obj =
        pulmo_dicom::volume::part10::open_path(path, false).map_err(|err| cannot_render(&err))?;
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        obj.decode_pixel_data_frame(index)
    }))
    .map_err(|_| ApiError::NotFound("the frame could not be decoded".to_owned()))?
    .map_err(|err| cannot_render(&err))?;
    let (rows, columns) = (decoded.rows(), decoded.columns());
    let data = decoded.data();
    let plane = (rows * columns) as usize;
    if decoded.bits_allocated() != 8 || data.len() < plane * 3 {
        return Err(ApiError::BadRequest(
            "pulmo renders 8-bit colour images only".to_owned(),
        ));
    }
    let pixels = match decoded.planar_configuration() {
        PlanarConfiguration::Standard => data[..plane * 3].to_vec(),
        PlanarConfiguration::PixelFirst => (0..plane)
            .flat_map(|i| [data[i], data[plane + i], data[2 * plane + i]])
            .collect(),
    };
    let image = RgbImage::from_raw(columns, rows, pixels)
        .expect("three samples per pixel (checked). This is a bug.");
    Ok(DynamicImage::ImageRgb8(image))
}

/// An instance without an image pulmo can render has no rendered resource: 404. The
/// cause names server paths, so it goes to the log only.
fn cannot_render(err: &dyn std::error::Error) -> ApiError {
    tracing::info!(error = %crate::pipeline::error_chain(err), "no rendered image");
    ApiError::NotFound("the instance has no image pulmo renders".to_owned())
}

fn encode(
    image: DynamicImage,
    jpeg: bool,
    quality: u8,
) -> Result<(Vec<u8>, &'static str), ApiError> {
    let mut bytes = Cursor::new(Vec::new());
    let written = if jpeg {
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality);
        image.write_with_encoder(encoder)
    } else {
        image.write_to(&mut bytes, ImageFormat::Png)
    };
    written.map_err(|err| ApiError::internal(&err))?;
    Ok((
        bytes.into_inner(),
        if jpeg { "image/jpeg" } else { "image/png" },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_a_centre_and_a_width_in_decimals() {
        let w = parse_window("-600,1500").unwrap();
        assert_eq!((w.centre, w.width, w.sigmoid), (-600.0, 1500.0, false));
        assert!(parse_window("40,400,sigmoid").unwrap().sigmoid);
        assert_eq!(parse_window("0.5,0").unwrap().width, 0.0);
        for bad in [
            "",
            "1",
            "1,-5",
            "1.,2",
            "+1,2",
            "1e3,2",
            "1234567,1",
            "a,b",
            "1,2,cubic",
            "1,2,linear,4",
            "NaN,4",
        ] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn levels_run_from_black_to_white_across_the_window() {
        let linear = Window {
            centre: 0.0,
            width: 100.0,
            sigmoid: false,
        };
        assert_eq!(level(-60.0, linear), 0);
        assert_eq!(level(60.0, linear), 255);
        let sigmoid = Window {
            sigmoid: true,
            ..linear
        };
        assert!((120..=135).contains(&level(0.0, sigmoid)));
    }
}
