use image::ImageFormat;
use proptest::prelude::*;

use super::fixtures::{bomb, photo_with_gps, picture, CAMERA, POSITION};
use super::*;

fn decoded(avatar: &Avatar) -> image::DynamicImage {
    image::load_from_memory_with_format(&avatar.png, ImageFormat::Png).unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn each_accepted_format_becomes_a_fixed_size_png_named_by_its_digest() {
    for (media_type, format) in MEDIA_TYPES {
        let avatar = normalize(media_type, &picture(300, 200, *format)).unwrap();
        assert_eq!(&avatar.png[..8], b"\x89PNG\r\n\x1a\n", "{media_type}");
        let image = decoded(&avatar);
        assert_eq!(
            (image.width(), image.height()),
            (SIDE, SIDE),
            "{media_type}"
        );
        let digest: String = Sha256::digest(&avatar.png)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(avatar.digest, digest);
        assert!(is_digest(&avatar.digest));
        // The same upload makes the same avatar: the URL names the content.
        assert_eq!(
            normalize(media_type, &picture(300, 200, *format)).unwrap(),
            avatar
        );
    }
    // Parameters of the media type are ignored, case too.
    assert!(normalize(
        "Image/PNG; charset=binary",
        &picture(10, 10, ImageFormat::Png)
    )
    .is_ok());
}

#[test]
fn metadata_is_stripped() {
    let upload = photo_with_gps();
    assert!(contains(&upload, POSITION) && contains(&upload, CAMERA));
    let avatar = normalize("image/jpeg", &upload).unwrap();
    for secret in [&b"GPS"[..], CAMERA, b"Exif", b"eXIf", b"tEXt", b"iTXt"] {
        assert!(
            !contains(&avatar.png, secret),
            "{}",
            String::from_utf8_lossy(secret)
        );
    }
}

#[test]
fn a_polyglot_keeps_only_its_pixels() {
    // A PNG followed by an HTML page and a ZIP header: a browser sniffing it, or an archive
    // tool, would find a second file in it.
    let mut upload = picture(64, 64, ImageFormat::Png);
    upload.extend_from_slice(b"<html><script>alert(document.cookie)</script></html>PK\x03\x04");
    let avatar = normalize("image/png", &upload).unwrap();
    assert!(!contains(&avatar.png, b"<script"));
    assert!(!contains(&avatar.png, b"PK\x03\x04"));
    // And what only claims to be an image is refused.
    let html = b"<!doctype html><html><script>alert(1)</script></html>";
    assert_eq!(
        normalize("image/png", html),
        Err(AvatarError::NotTheDeclaredType {
            declared: "image/png"
        })
    );
    // A real image under another image's name too: the bytes decide, and must agree.
    assert_eq!(
        normalize("image/jpeg", &picture(8, 8, ImageFormat::Png)),
        Err(AvatarError::NotTheDeclaredType {
            declared: "image/jpeg"
        })
    );
}

#[test]
fn bombs_and_giants_are_refused_before_decoding() {
    let started = std::time::Instant::now();
    let claimed = bomb(100_000, 100_000);
    assert!(claimed.len() < 100);
    assert!(
        matches!(
            normalize("image/png", &claimed),
            Err(AvatarError::TooManyPixels { .. })
        ),
        "{:?}",
        normalize("image/png", &claimed)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "nothing was decoded"
    );
    // One side over the limit, the other tiny: a real image, still refused.
    assert_eq!(
        normalize("image/png", &picture(SIDE_MAX + 1, 2, ImageFormat::Png)),
        Err(AvatarError::TooManyPixels {
            width: SIDE_MAX + 1,
            height: 2
        })
    );
    // A bomb just inside the limits decodes as what it is: a broken image.
    assert!(matches!(
        normalize("image/png", &bomb(SIDE_MAX, SIDE_MAX)),
        Err(AvatarError::Undecodable(_))
    ));
}

#[test]
fn broken_unsupported_and_oversized_uploads_are_refused() {
    let png = picture(50, 50, ImageFormat::Png);
    assert!(matches!(
        normalize("image/png", &png[..png.len() / 2]),
        Err(AvatarError::Undecodable(_))
    ));
    assert_eq!(
        normalize("image/gif", b"GIF89a"),
        Err(AvatarError::UnsupportedType("image/gif".into()))
    );
    assert_eq!(
        normalize("image/svg+xml", b"<svg/>"),
        Err(AvatarError::UnsupportedType("image/svg+xml".into()))
    );
    let mut huge = picture(50, 50, ImageFormat::Png);
    huge.resize(UPLOAD_BYTES_MAX + 1, 0);
    assert_eq!(
        normalize("image/png", &huge),
        Err(AvatarError::TooManyBytes(UPLOAD_BYTES_MAX + 1))
    );
    assert!(!is_digest("../../etc/passwd") && !is_digest(&"A".repeat(64)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the bytes, an answer and never a panic; for a real image's bytes, cut or
    /// flipped anywhere, the same.
    #[test]
    fn no_upload_panics(
        noise in proptest::collection::vec(any::<u8>(), 0..2048),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        kind in 0..MEDIA_TYPES.len(),
    ) {
        let (media_type, format) = MEDIA_TYPES[kind];
        let _ = normalize(media_type, &noise);
        let mut real = picture(40, 30, format);
        let at = flip.index(real.len());
        real[at] ^= 0x5A;
        let _ = normalize(media_type, &real);
        let _ = normalize(media_type, &real[..cut.index(real.len())]);
    }
}
