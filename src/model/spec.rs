//! The model names CLIP-as-service's ONNX backend accepts, and what each name implies.
//!
//! A name decides the image size and the tokenizer; the graphs themselves come from a model folder
//! (see [`super::folder`]). File names and md5 sums are those of the original's model bucket; the
//! [`super::registry`] turns them into the files the cache fetches.

use std::fmt;

/// How text is turned into token ids for a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerKind {
    /// OpenAI's CLIP byte-level BPE (shipped with the crate), fixed context of 77.
    ClipBpe,
    /// A Hugging Face tokenizer (`tokenizer.json` in the model folder), as the M-CLIP models use.
    HuggingFace,
}

/// One entry of the model table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSpec {
    /// The name as users spell it, e.g. `ViT-B-32::openai`.
    pub name: &'static str,
    /// Side of the square image the visual graph expects.
    pub image_size: u32,
    pub tokenizer: TokenizerKind,
    /// Embedding dimension documented for the released weights (the graph is the authority).
    pub documented_dim: usize,
    /// Remote file for the text tower, relative to the model bucket, and its md5.
    pub textual_file: &'static str,
    pub textual_md5: &'static str,
    /// Remote file for the image tower, relative to the model bucket, and its md5.
    pub visual_file: &'static str,
    pub visual_md5: &'static str,
}

/// The default model, as in the original.
pub(crate) const DEFAULT_MODEL: &str = "ViT-B-32::openai";

/// Error for a name that is not in the table; it carries the closest known names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown model `{name}`; closest known names: {}; `clip-worker models list` shows them all", suggestion_list(.closest))]
pub struct UnknownModel {
    pub name: String,
    /// Known names nearest to `name` by edit distance, nearest first.
    pub closest: Vec<String>,
}

impl UnknownModel {
    /// The error for `name`, suggesting the nearest of `known`.
    pub(crate) fn among<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Self {
        UnknownModel {
            name: name.to_string(),
            closest: closest_names(name, known, 3),
        }
    }
}

fn suggestion_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `count` names of `known` nearest to `name` (case-insensitive Levenshtein distance; ties
/// keep table order).
pub(crate) fn closest_names<'a>(
    name: &str,
    known: impl IntoIterator<Item = &'a str>,
    count: usize,
) -> Vec<String> {
    let wanted = name.to_lowercase();
    let mut scored: Vec<(usize, &str)> = known
        .into_iter()
        .map(|k| (edit_distance(&wanted, &k.to_lowercase()), k))
        .collect();
    scored.sort_by_key(|(d, _)| *d);
    scored
        .into_iter()
        .take(count)
        .map(|(_, k)| k.to_string())
        .collect()
}

/// Levenshtein distance over characters (single-row dynamic programme).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// Looks a model name up, accepting the legacy aliases (`ViT-B/32`, `RN50`, ...).
pub(crate) fn lookup(name: &str) -> Result<&'static ModelSpec, UnknownModel> {
    MODELS
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| UnknownModel::among(name, MODELS.iter().map(|m| m.name)))
}

/// Every model name with its defining properties.
pub(crate) fn all() -> &'static [ModelSpec] {
    MODELS
}

macro_rules! clip {
    ($name:expr, $size:expr, $dim:expr, $tf:expr, $tmd5:expr, $vf:expr, $vmd5:expr) => {
        ModelSpec {
            name: $name,
            image_size: $size,
            tokenizer: TokenizerKind::ClipBpe,
            documented_dim: $dim,
            textual_file: $tf,
            textual_md5: $tmd5,
            visual_file: $vf,
            visual_md5: $vmd5,
        }
    };
}

macro_rules! mclip {
    ($name:expr, $size:expr, $dim:expr, $tf:expr, $tmd5:expr, $vf:expr, $vmd5:expr) => {
        ModelSpec {
            name: $name,
            image_size: $size,
            tokenizer: TokenizerKind::HuggingFace,
            documented_dim: $dim,
            textual_file: $tf,
            textual_md5: $tmd5,
            visual_file: $vf,
            visual_md5: $vmd5,
        }
    };
}

#[rustfmt::skip]
static MODELS: &[ModelSpec] = &[
    clip!("RN50::openai", 224, 1024, "RN50/textual.onnx", "722418bfe47a1f5c79d1f44884bb3103", "RN50/visual.onnx", "5761475db01c3abb68a5a805662dcd10"),
    clip!("RN50::yfcc15m", 224, 1024, "RN50-yfcc15m/textual.onnx", "4ff2ea7228b9d2337b5440d1955c2108", "RN50-yfcc15m/visual.onnx", "87daa9b4a67449b5390a9a73b8c15772"),
    clip!("RN50::cc12m", 224, 1024, "RN50-cc12m/textual.onnx", "78fa0ae0ea47aca4b8864f709c48dcec", "RN50-cc12m/visual.onnx", "0e04bf92f3c181deea2944e322ebee77"),
    clip!("RN101::openai", 224, 512, "RN101/textual.onnx", "2d9efb7d184c0d68a369024cedfa97af", "RN101/visual.onnx", "0297ebc773af312faab54f8b5a622d71"),
    clip!("RN101::yfcc15m", 224, 512, "RN101-yfcc15m/textual.onnx", "7aa2a4e3d5b960998a397a6712389f08", "RN101-yfcc15m/visual.onnx", "681a72dd91c9c79464947bf29b623cb4"),
    clip!("RN50x4::openai", 288, 640, "RN50x4/textual.onnx", "d9d63d3fe35fb14d4affaa2c4e284005", "RN50x4/visual.onnx", "16afe1e35b85ad862e8bbdb12265c9cb"),
    clip!("RN50x16::openai", 384, 768, "RN50x16/textual.onnx", "1525785494ff5307cadc6bfa56db6274", "RN50x16/visual.onnx", "2a293d9c3582f8abe29c9999e47d1091"),
    clip!("RN50x64::openai", 448, 1024, "RN50x64/textual.onnx", "3ae8ade74578eb7a77506c11bfbfaf2c", "RN50x64/visual.onnx", "1341f10b50b3aca6d2d5d13982cabcfc"),
    clip!("ViT-B-32::openai", 224, 512, "ViT-B-32/textual.onnx", "bd6d7871e8bb95f3cc83aff3398d7390", "ViT-B-32/visual.onnx", "88c6f38e522269d6c04a85df18e6370c"),
    clip!("ViT-B-32::laion2b_e16", 224, 512, "ViT-B-32-laion2b_e16/textual.onnx", "aa6eac88fe77d21f337e806417957497", "ViT-B-32-laion2b_e16/visual.onnx", "0cdc00a9dfad560153d40aced9df0c8f"),
    clip!("ViT-B-32::laion400m_e31", 224, 512, "ViT-B-32-laion400m_e31/textual.onnx", "832f417bf1b3f1ced8f9958eda71665c", "ViT-B-32-laion400m_e31/visual.onnx", "62326b925ae342313d4cc99c2741b313"),
    clip!("ViT-B-32::laion400m_e32", 224, 512, "ViT-B-32-laion400m_e32/textual.onnx", "93284915937ba42a2b52ae8d3e5283a0", "ViT-B-32-laion400m_e32/visual.onnx", "db220821a31fe9795fd8c2ba419078c5"),
    clip!("ViT-B-32::laion2b-s34b-b79k", 224, 512, "ViT-B-32-laion2b-s34b-b79k/textual.onnx", "84af5ae53da56464c76e67fe50fddbe9", "ViT-B-32-laion2b-s34b-b79k/visual.onnx", "a2d4cbd1cf2632cd09ffce9b40bfd8bd"),
    clip!("ViT-B-16::openai", 224, 512, "ViT-B-16/textual.onnx", "6f0976629a446f95c0c8767658f12ebe", "ViT-B-16/visual.onnx", "d5c03bfeef1abbd9bede54a8f6e1eaad"),
    clip!("ViT-B-16::laion400m_e31", 224, 512, "ViT-B-16-laion400m_e31/textual.onnx", "5db27763c06c06c727c90240264bf4f7", "ViT-B-16-laion400m_e31/visual.onnx", "04a6a780d855a36eee03abca64cd5361"),
    clip!("ViT-B-16::laion400m_e32", 224, 512, "ViT-B-16-laion400m_e32/textual.onnx", "9abe000a51b6f1cbaac8fde601b16725", "ViT-B-16-laion400m_e32/visual.onnx", "d38c144ac3ad7fbc1966f88ff8fa522f"),
    clip!("ViT-B-16-plus-240::laion400m_e31", 240, 640, "ViT-B-16-plus-240-laion400m_e31/textual.onnx", "2b524e7a530a98010cc7e57756937c5c", "ViT-B-16-plus-240-laion400m_e31/visual.onnx", "a78989da3300fd0c398a9877dd26a9f1"),
    clip!("ViT-B-16-plus-240::laion400m_e32", 240, 640, "ViT-B-16-plus-240-laion400m_e32/textual.onnx", "53c8d26726b386ca0749207876482907", "ViT-B-16-plus-240-laion400m_e32/visual.onnx", "7a32c4272c1ee46f734486570d81584b"),
    clip!("ViT-L-14::openai", 224, 768, "ViT-L-14/textual.onnx", "325380b31af4837c2e0d9aba2fad8e1b", "ViT-L-14/visual.onnx", "53f5b319d3dc5d42572adea884e31056"),
    clip!("ViT-L-14::laion400m_e31", 224, 768, "ViT-L-14-laion400m_e31/textual.onnx", "36216b85e32668ea849730a54e1e09a4", "ViT-L-14-laion400m_e31/visual.onnx", "15fa5a24916e2a58325c5cf70350c300"),
    clip!("ViT-L-14::laion400m_e32", 224, 768, "ViT-L-14-laion400m_e32/textual.onnx", "8ba5b76ba71992923470c0261b10a67c", "ViT-L-14-laion400m_e32/visual.onnx", "49db3ba92bd816001e932530ad92d76c"),
    clip!("ViT-L-14::laion2b-s32b-b82k", 224, 768, "ViT-L-14-laion2b-s32b-b82k/textual.onnx", "da36a6cbed4f56abf576fdea8b6fe2ee", "ViT-L-14-laion2b-s32b-b82k/visual.onnx", "1e337a190abba6a8650237dfae4740b7"),
    clip!("ViT-L-14-336::openai", 336, 768, "ViT-L-14@336px/textual.onnx", "78fab479f136403eed0db46f3e9e7ed2", "ViT-L-14@336px/visual.onnx", "f3b1f5d55ca08d43d749e11f7e4ba27e"),
    clip!("ViT-H-14::laion2b-s32b-b79k", 224, 1024, "ViT-H-14-laion2b-s32b-b79k/textual.onnx", "41e73c0c871d0e8e5d5e236f917f1ec3", "ViT-H-14-laion2b-s32b-b79k/visual.zip", "38151ea5985d73de94520efef38db4e7"),
    clip!("ViT-g-14::laion2b-s12b-b42k", 224, 1024, "ViT-g-14-laion2b-s12b-b42k/textual.onnx", "e597b7ab4414ecd92f715d47e79a033f", "ViT-g-14-laion2b-s12b-b42k/visual.zip", "6d0ac4329de9b02474f4752a5d16ba82"),
    mclip!("M-CLIP/LABSE-Vit-L-14", 224, 768, "M-CLIP-LABSE-Vit-L-14/textual.onnx", "03727820116e63c7d19c72bb5d839488", "M-CLIP-LABSE-Vit-L-14/visual.onnx", "a78028eab30084c3913edfb0c8411f15"),
    mclip!("M-CLIP/XLM-Roberta-Large-Vit-B-32", 224, 512, "M-CLIP-XLM-Roberta-Large-Vit-B-32/textual.zip", "41f51ec9af4754d11c7b7929e2caf5b9", "M-CLIP-XLM-Roberta-Large-Vit-B-32/visual.onnx", "5f18f68ac94e294863bfd1f695c8c5ca"),
    mclip!("M-CLIP/XLM-Roberta-Large-Vit-B-16Plus", 240, 640, "M-CLIP-XLM-Roberta-Large-Vit-B-16Plus/textual.zip", "6c3e55f7d2d6c12f2c1f1dd36fdec607", "M-CLIP-XLM-Roberta-Large-Vit-B-16Plus/visual.onnx", "467a3ef3e5f50abcf850c3db9e705f8e"),
    mclip!("M-CLIP/XLM-Roberta-Large-Vit-L-14", 224, 768, "M-CLIP-XLM-Roberta-Large-Vit-L-14/textual.zip", "3dff00335dc3093acb726dab975ae57d", "M-CLIP-XLM-Roberta-Large-Vit-L-14/visual.onnx", "a78028eab30084c3913edfb0c8411f15"),
    // Legacy aliases: same files as the `::openai` rows (the original caches them separately).
    clip!("RN50", 224, 1024, "RN50/textual.onnx", "722418bfe47a1f5c79d1f44884bb3103", "RN50/visual.onnx", "5761475db01c3abb68a5a805662dcd10"),
    clip!("RN101", 224, 512, "RN101/textual.onnx", "2d9efb7d184c0d68a369024cedfa97af", "RN101/visual.onnx", "0297ebc773af312faab54f8b5a622d71"),
    clip!("RN50x4", 288, 640, "RN50x4/textual.onnx", "d9d63d3fe35fb14d4affaa2c4e284005", "RN50x4/visual.onnx", "16afe1e35b85ad862e8bbdb12265c9cb"),
    clip!("RN50x16", 384, 768, "RN50x16/textual.onnx", "1525785494ff5307cadc6bfa56db6274", "RN50x16/visual.onnx", "2a293d9c3582f8abe29c9999e47d1091"),
    clip!("RN50x64", 448, 1024, "RN50x64/textual.onnx", "3ae8ade74578eb7a77506c11bfbfaf2c", "RN50x64/visual.onnx", "1341f10b50b3aca6d2d5d13982cabcfc"),
    clip!("ViT-B/32", 224, 512, "ViT-B-32/textual.onnx", "bd6d7871e8bb95f3cc83aff3398d7390", "ViT-B-32/visual.onnx", "88c6f38e522269d6c04a85df18e6370c"),
    clip!("ViT-B/16", 224, 512, "ViT-B-16/textual.onnx", "6f0976629a446f95c0c8767658f12ebe", "ViT-B-16/visual.onnx", "d5c03bfeef1abbd9bede54a8f6e1eaad"),
    clip!("ViT-L/14", 224, 768, "ViT-L-14/textual.onnx", "325380b31af4837c2e0d9aba2fad8e1b", "ViT-L-14/visual.onnx", "53f5b319d3dc5d42572adea884e31056"),
    clip!("ViT-L/14@336px", 336, 768, "ViT-L-14@336px/textual.onnx", "78fab479f136403eed0db46f3e9e7ed2", "ViT-L-14@336px/visual.onnx", "f3b1f5d55ca08d43d749e11f7e4ba27e"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_model_is_vit_b_32_at_224() {
        let m = lookup(DEFAULT_MODEL).unwrap();
        assert_eq!(m.image_size, 224);
        assert_eq!(m.tokenizer, TokenizerKind::ClipBpe);
        assert_eq!(m.documented_dim, 512);
    }

    #[test]
    fn image_sizes_follow_the_original() {
        for (name, size) in [
            ("RN50x4::openai", 288),
            ("RN50x16::openai", 384),
            ("RN50x64::openai", 448),
            ("ViT-B-16-plus-240::laion400m_e32", 240),
            ("ViT-L/14@336px", 336),
            ("M-CLIP/XLM-Roberta-Large-Vit-B-16Plus", 240),
        ] {
            assert_eq!(lookup(name).unwrap().image_size, size, "{name}");
        }
        assert_eq!(all().len(), 38);
    }

    #[test]
    fn mclip_uses_hugging_face_tokenizer() {
        assert_eq!(
            lookup("M-CLIP/LABSE-Vit-L-14").unwrap().tokenizer,
            TokenizerKind::HuggingFace
        );
    }

    #[test]
    fn unknown_names_suggest_the_closest_known_names() {
        let err = lookup("ViT-B-32::laion2b_s34b_b79k").unwrap_err();
        assert_eq!(err.closest[0], "ViT-B-32::laion2b-s34b-b79k");
        assert_eq!(err.closest.len(), 3);
        let msg = err.to_string();
        assert!(msg.contains("`ViT-B-32::laion2b-s34b-b79k`"), "{msg}");
        assert_eq!(lookup("vit-l/14").unwrap_err().closest[0], "ViT-L/14");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
    }
}
