//! Pictures for tests, made in memory (the `fixtures` feature): real images in each accepted
//! format, a camera's JPEG carrying a GPS position, and a decompression bomb's header.

use std::io::Cursor;

pub use image::ImageFormat;
use image::{Rgb, RgbImage};

/// A real picture, `width` x `height`: a gradient, so that scaling has something to do.
pub fn picture(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let image = RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 128])
    });
    let mut bytes = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut bytes), format)
        .expect("encoding into memory cannot fail");
    bytes
}

/// What [`photo_with_gps`] hides: a camera's name and a position.
pub const CAMERA: &[u8] = b"SpyCam1";
pub const POSITION: &[u8] = b"GPS 48.8584N 2.2945E";

/// A camera's JPEG: an EXIF segment with its name and a GPS position before the picture.
pub fn photo_with_gps() -> Vec<u8> {
    let jpeg = picture(400, 300, ImageFormat::Jpeg);
    assert_eq!(&jpeg[..2], [0xFF, 0xD8]);
    // A little-endian TIFF with two entries (Make, and the GPS IFD's offset). The values need
    // not be complete for the point: these bytes must not survive.
    let mut exif = b"Exif\0\0II*\0\x08\0\0\0".to_vec();
    exif.extend_from_slice(&[2, 0]);
    exif.extend_from_slice(&[0x0F, 0x01, 2, 0, 8, 0, 0, 0, 38, 0, 0, 0]);
    exif.extend_from_slice(&[0x25, 0x88, 4, 0, 1, 0, 0, 0, 46, 0, 0, 0]);
    exif.extend_from_slice(&[0, 0, 0, 0]);
    exif.extend_from_slice(CAMERA);
    exif.push(0);
    exif.extend_from_slice(&[1, 0, 2, 0, 2, 0, 4, 0, 0, 0, b'N', 0, 0, 0, 0, 0, 0, 0]);
    exif.extend_from_slice(POSITION);
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
    out.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&exif);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// A PNG whose header claims `width` x `height` RGBA pixels, followed by a few bytes of
/// compressed data: a decompression bomb's shape.
pub fn bomb(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8; 4], data: &[u8]| {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut header = Vec::new();
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 6, 0, 0, 0]); // 8-bit RGBA, no interlace
    chunk(b"IHDR", &header);
    chunk(
        b"IDAT",
        &[0x78, 0x9c, 0xed, 0xc1, 0x01, 0x0d, 0x00, 0x00, 0x00],
    );
    chunk(b"IEND", &[]);
    png
}

/// A PNG's width and height, read back.
pub fn png_dimensions(png: &[u8]) -> (u32, u32) {
    let image = image::load_from_memory_with_format(png, ImageFormat::Png).expect("a PNG");
    (image.width(), image.height())
}

/// CRC-32 (ISO-HDLC), as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
