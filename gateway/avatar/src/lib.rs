//! `kizo-avatar`: what an uploaded avatar becomes, or why it is refused.
//!
//! An upload is at most [`UPLOAD_BYTES_MAX`] bytes of PNG, JPEG or WebP, told by its own first
//! bytes (the declared media type must agree). Its width and height are read from its header
//! and checked ([`SIDE_MAX`]) before a single pixel is decoded, and the decoder runs under the
//! same limits and an allocation cap, so that a small file that claims a huge image (a
//! decompression bomb) costs nothing. The pixels, turned upright as the file's orientation
//! says, are cropped to a centred square and scaled to [`SIDE`] × [`SIDE`], then written as a
//! new PNG: nothing of the upload but its pixels survives (no EXIF, no GPS position, no
//! comment, no second file appended to the first).
//!
//! Pure: bytes in, bytes out. No I/O, no clock.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use sha2::{Digest, Sha256};

/// The largest upload, in bytes.
pub const UPLOAD_BYTES_MAX: usize = 2 << 20;
/// The widest and tallest upload, in pixels.
pub const SIDE_MAX: u32 = 4096;
/// The side of every stored avatar, in pixels.
pub const SIDE: u32 = 160;
/// The most the decoder may allocate: the largest image allowed, as 8-bit RGBA, and room for
/// the decoder's own buffers.
const DECODE_BYTES_MAX: u64 = SIDE_MAX as u64 * SIDE_MAX as u64 * 4 + (16 << 20);

/// The media types accepted, and the format each names.
pub const MEDIA_TYPES: &[(&str, ImageFormat)] = &[
    ("image/png", ImageFormat::Png),
    ("image/jpeg", ImageFormat::Jpeg),
    ("image/webp", ImageFormat::WebP),
];

/// The media type of every stored avatar.
pub const STORED_MEDIA_TYPE: &str = "image/png";

/// An avatar as stored and served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Avatar {
    /// A PNG of [`SIDE`] × [`SIDE`] pixels.
    pub png: Vec<u8>,
    /// Lowercase hex SHA-256 of `png`: the avatar's name in its URL.
    pub digest: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AvatarError {
    #[error("{0} bytes: an avatar is at most {UPLOAD_BYTES_MAX} bytes")]
    TooManyBytes(usize),
    #[error("{0}: send image/png, image/jpeg or image/webp")]
    UnsupportedType(String),
    #[error("the bytes are not a {declared} image")]
    NotTheDeclaredType { declared: &'static str },
    #[error("{width}x{height} pixels: an avatar is at most {SIDE_MAX}x{SIDE_MAX}")]
    TooManyPixels { width: u32, height: u32 },
    #[error("the image could not be decoded: {0}")]
    Undecodable(String),
}

/// The stored avatar for an upload of `bytes` declared as `media_type`.
pub fn normalize(media_type: &str, bytes: &[u8]) -> Result<Avatar, AvatarError> {
    if bytes.len() > UPLOAD_BYTES_MAX {
        return Err(AvatarError::TooManyBytes(bytes.len()));
    }
    let essence = media_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let (declared, format) = MEDIA_TYPES
        .iter()
        .find(|(name, _)| *name == essence)
        .copied()
        .ok_or_else(|| AvatarError::UnsupportedType(essence.clone()))?;
    // The format the bytes say they are, whatever the request said.
    let sniffed = image::guess_format(bytes).ok();
    if sniffed != Some(format) {
        return Err(AvatarError::NotTheDeclaredType { declared });
    }
    let reader = || {
        let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
        let mut limits = Limits::default();
        limits.max_image_width = Some(SIDE_MAX);
        limits.max_image_height = Some(SIDE_MAX);
        limits.max_alloc = Some(DECODE_BYTES_MAX);
        reader.limits(limits);
        reader
    };
    // The header alone first: a bomb is refused before any pixel is decoded.
    let mut decoder = reader()
        .into_decoder()
        .map_err(|error| refusal(bytes, error))?;
    let (width, height) = decoder.dimensions();
    if width > SIDE_MAX || height > SIDE_MAX {
        return Err(AvatarError::TooManyPixels { width, height });
    }
    if width == 0 || height == 0 {
        return Err(AvatarError::Undecodable("an empty image".into()));
    }
    let orientation = decoder
        .orientation()
        .map_err(|e| AvatarError::Undecodable(e.to_string()))?;
    let mut image =
        DynamicImage::from_decoder(decoder).map_err(|e| AvatarError::Undecodable(e.to_string()))?;
    image.apply_orientation(orientation);
    let square = image
        .resize_to_fill(SIDE, SIDE, image::imageops::FilterType::Lanczos3)
        .into_rgba8();
    assert_eq!(square.dimensions(), (SIDE, SIDE), "resize_to_fill fills");
    let mut png = Vec::new();
    square
        .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .map_err(|e| AvatarError::Undecodable(e.to_string()))?;
    let digest = Sha256::digest(&png)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Avatar { png, digest })
}

/// Whether `text` could name a stored avatar (64 lowercase hex digits).
pub fn is_digest(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn refusal(bytes: &[u8], error: image::ImageError) -> AvatarError {
    match error {
        image::ImageError::Limits(_) => {
            // The limits were passed: say by how much when the header can tell.
            let size = ImageReader::new(Cursor::new(bytes))
                .with_guessed_format()
                .ok()
                .and_then(|r| r.into_dimensions().ok())
                .unwrap_or((0, 0));
            AvatarError::TooManyPixels {
                width: size.0,
                height: size.1,
            }
        }
        other => AvatarError::Undecodable(other.to_string()),
    }
}

#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
#[cfg(test)]
mod tests;
