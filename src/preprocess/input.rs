//! What a document is: text, raw image bytes, a URI, or a pixel tensor; and which modality it has.

use crate::error::{DocError, ErrorCode};
use serde::{Deserialize, Serialize};

/// A pixel tensor given directly: uint8, HWC (`[H, W, C]` with C in 1, 3, 4) or `[H, W]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PixelTensor {
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// A document as the engine sees it: transport-neutral, field names as CLIP-as-service's Document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Document {
    pub id: Option<String>,
    pub text: Option<String>,
    pub blob: Option<Vec<u8>>,
    pub uri: Option<String>,
    pub tensor: Option<PixelTensor>,
    pub mime_type: Option<String>,
}

/// The two towers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    Text,
    Image,
}

impl Modality {
    pub fn as_str(self) -> &'static str {
        match self {
            Modality::Text => "text",
            Modality::Image => "image",
        }
    }
}

/// The content a document will be encoded from, after the original's precedence rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Content<'a> {
    Text(&'a str),
    Tensor(&'a PixelTensor),
    Blob(&'a [u8]),
    Uri(&'a str),
}

impl Content<'_> {
    pub(crate) fn modality(&self) -> Modality {
        match self {
            Content::Text(_) => Modality::Text,
            _ => Modality::Image,
        }
    }
}

impl Document {
    pub fn text(text: impl Into<String>) -> Self {
        Document {
            text: Some(text.into()),
            ..Default::default()
        }
    }

    pub fn uri(uri: impl Into<String>) -> Self {
        Document {
            uri: Some(uri.into()),
            ..Default::default()
        }
    }

    pub fn blob(bytes: Vec<u8>) -> Self {
        Document {
            blob: Some(bytes),
            ..Default::default()
        }
    }

    /// Picks the content to encode: non-empty text wins (even over a uri), then a tensor, then a
    /// blob, then a uri. A document with none of them is an error for that document alone (the
    /// original skipped it silently, which loses the caller's job without a word).
    pub(crate) fn content(&self) -> Result<Content<'_>, DocError> {
        if let Some(t) = self.text.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Content::Text(t));
        }
        if let Some(t) = &self.tensor {
            return Ok(Content::Tensor(t));
        }
        if let Some(b) = self.blob.as_deref().filter(|b| !b.is_empty()) {
            return Ok(Content::Blob(b));
        }
        if let Some(u) = self.uri.as_deref().filter(|u| !u.is_empty()) {
            return Ok(Content::Uri(u));
        }
        Err(DocError::new(
            ErrorCode::EmptyDocument,
            "document has no text, blob, uri or tensor",
        ))
    }
}

/// How a bare string given on the command line is understood, like the original client: an
/// existing file, or a URI whose guessed type is an image, is an image; anything else is text.
pub(crate) fn document_from_cli_arg(arg: &str) -> Document {
    if std::path::Path::new(arg).is_file() || uri_looks_like_image(arg) {
        Document::uri(arg)
    } else {
        Document::text(arg)
    }
}

/// `mimetypes.guess_type(uri)` starts with `image`: a data URI's media type, else the extension.
pub(crate) fn uri_looks_like_image(uri: &str) -> bool {
    if let Some(rest) = uri.strip_prefix("data:") {
        return rest.to_ascii_lowercase().starts_with("image/");
    }
    let path = uri.split(['?', '#']).next().unwrap_or(uri);
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    if ext.contains('/') {
        return false;
    }
    matches!(
        ext.as_str(),
        "jpg"
            | "jpeg"
            | "jpe"
            | "png"
            | "gif"
            | "bmp"
            | "webp"
            | "tif"
            | "tiff"
            | "avif"
            | "ico"
            | "svg"
            | "heic"
            | "heif"
            | "pbm"
            | "pgm"
            | "ppm"
            | "pnm"
            | "ras"
            | "xbm"
            | "xpm"
            | "rgb"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_wins_over_uri_and_empty_docs_are_errors() {
        let mut d = Document::text("hello");
        d.uri = Some("x.jpg".into());
        assert_eq!(d.content().unwrap().modality(), Modality::Text);
        let d = Document {
            text: Some(String::new()),
            uri: Some("a.png".into()),
            ..Default::default()
        };
        assert_eq!(d.content().unwrap(), Content::Uri("a.png"));
        let err = Document::default().content().unwrap_err();
        assert_eq!(err.code, ErrorCode::EmptyDocument);
    }

    #[test]
    fn tensor_then_blob_then_uri() {
        let t = PixelTensor {
            shape: vec![1, 1, 3],
            data: vec![0, 1, 2],
        };
        let d = Document {
            tensor: Some(t.clone()),
            blob: Some(vec![1]),
            uri: Some("u.png".into()),
            ..Default::default()
        };
        assert_eq!(d.content().unwrap(), Content::Tensor(&t));
        let d = Document {
            blob: Some(vec![1]),
            uri: Some("u.png".into()),
            ..Default::default()
        };
        assert_eq!(d.content().unwrap(), Content::Blob(&[1]));
    }

    #[test]
    fn cli_arguments_are_classified_like_the_client() {
        assert!(uri_looks_like_image("https://example.com/a/cat.JPG?x=1"));
        assert!(uri_looks_like_image("data:image/png;base64,AAAA"));
        assert!(!uri_looks_like_image("https://picsum.photos/200"));
        assert!(!uri_looks_like_image("a photo of a cat."));
        assert_eq!(
            document_from_cli_arg("hello world").text.as_deref(),
            Some("hello world")
        );
        assert!(document_from_cli_arg("https://x.org/dog.webp")
            .uri
            .is_some());
    }
}
