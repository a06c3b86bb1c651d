//! The instruction tokenizer: a word-level vocabulary in Hugging Face
//! `tokenizers` format (`tokenizer.json`), lower-cased and split on white
//! space and punctuation. The project generates the file from the words of
//! every task's instruction templates and ships it
//! (`policies/assets/vla_tokenizer.json`; a test rebuilds and compares it).
//! A checkpoint carries its own copy and the copy's SHA-256.
//!
//! A word outside the vocabulary becomes `[UNK]` and is counted, never a
//! panic: the policy still acts, and the count says it was guessing.

use serde_json::json;
use sha2::{Digest, Sha256};

/// Id 0: the padding after an instruction's last word (masked out).
pub const PAD: &str = "[PAD]";
/// Id 1: any word outside the vocabulary.
pub const UNK: &str = "[UNK]";
/// Punctuation an operator may type; known, so it is not counted unknown.
const PUNCTUATION: [&str; 6] = [".", ",", "!", "?", ";", ":"];

/// The tokenizer the project ships, built from every instruction word.
pub const SHIPPED_JSON: &str = include_str!("../../assets/vla_tokenizer.json");

/// The `tokenizer.json` text of a word-level vocabulary of `words` (after
/// `[PAD]` and `[UNK]` and the punctuation, in sorted order, lower-cased,
/// deduplicated): the same words give the same bytes.
pub fn word_level_json<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    let mut sorted: Vec<String> = words
        .into_iter()
        .map(str::to_lowercase)
        .chain(PUNCTUATION.iter().map(|p| p.to_string()))
        .collect();
    sorted.sort();
    sorted.dedup();
    let mut vocab = serde_json::Map::new();
    for (id, word) in [PAD.to_owned(), UNK.to_owned()]
        .into_iter()
        .chain(sorted)
        .enumerate()
    {
        vocab.insert(word, json!(id));
    }
    let special = |id: u32, content: &str| {
        json!({
            "id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        })
    };
    let file = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, PAD), special(1, UNK)],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": UNK},
    });
    let mut text = serde_json::to_string_pretty(&file).expect("JSON serialises");
    text.push('\n');
    text
}

/// An instruction as the model reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tokens {
    /// `max_words` ids, padded with 0.
    pub ids: Vec<u32>,
    /// Words read (ids before the padding).
    pub len: usize,
    /// Words outside the vocabulary (read as `[UNK]`).
    pub unknown: usize,
    /// Words past `max_words`, dropped.
    pub dropped: usize,
}

/// A loaded word-level tokenizer and the hash of its file.
#[derive(Clone)]
pub struct InstructionTokenizer {
    inner: tokenizers::Tokenizer,
    json: String,
    sha256: String,
    unk_id: u32,
    vocab_size: usize,
}

impl std::fmt::Debug for InstructionTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstructionTokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("sha256", &self.sha256)
            .finish()
    }
}

impl InstructionTokenizer {
    /// The tokenizer the project ships.
    pub fn shipped() -> Self {
        Self::from_json(SHIPPED_JSON).expect("the shipped tokenizer.json loads")
    }

    /// A tokenizer from the text of a `tokenizer.json`: it must be
    /// word-level with `[PAD]` = 0 and `[UNK]` = 1.
    pub fn from_json(json: &str) -> Result<Self, String> {
        let inner = tokenizers::Tokenizer::from_bytes(json.as_bytes())
            .map_err(|e| format!("not a tokenizer.json: {e}"))?;
        let id = |token: &str| inner.token_to_id(token);
        if id(PAD) != Some(0) || id(UNK) != Some(1) {
            return Err(format!(
                "the vocabulary must map {PAD} to 0 and {UNK} to 1 (it maps them to {:?} and {:?})",
                id(PAD),
                id(UNK)
            ));
        }
        let vocab_size = inner.get_vocab_size(true);
        Ok(Self {
            inner,
            json: json.to_owned(),
            sha256: sha256_hex(json.as_bytes()),
            unk_id: 1,
            vocab_size,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// SHA-256 (hex) of the file's bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn json(&self) -> &str {
        &self.json
    }

    /// The first `max_words` word ids of `text`, padded with 0.
    pub fn encode(&self, text: &str, max_words: usize) -> Result<Tokens, String> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| format!("cannot tokenize the instruction {text:?}: {e}"))?;
        let all = encoding.get_ids();
        let len = all.len().min(max_words);
        let mut ids = vec![0; max_words];
        ids[..len].copy_from_slice(&all[..len]);
        Ok(Tokens {
            unknown: all.iter().filter(|&&id| id == self.unk_id).count(),
            dropped: all.len() - len,
            ids,
            len,
        })
    }

    /// The words of `ids` (up to the padding), `[UNK]` for unknown ones.
    pub fn decode(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .take_while(|&&id| id != 0)
            .map(|&id| self.inner.id_to_token(id).unwrap_or_else(|| UNK.into()))
            .collect()
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unknown_words() {
        let tokenizer =
            InstructionTokenizer::from_json(&word_level_json(["touch", "the", "red", "marker"]))
                .unwrap();
        assert_eq!(tokenizer.vocab_size(), 2 + 6 + 4);
        let tokens = tokenizer.encode("Touch the RED marker.", 8).unwrap();
        assert_eq!((tokens.len, tokens.unknown, tokens.dropped), (5, 0, 0));
        assert_eq!(
            tokenizer.decode(&tokens.ids),
            ["touch", "the", "red", "marker", "."]
        );
        assert!(tokens.ids[5..].iter().all(|&id| id == 0));
        let tokens = tokenizer.encode("touch the purple marker", 3).unwrap();
        assert_eq!((tokens.len, tokens.unknown, tokens.dropped), (3, 1, 1));
        assert_eq!(tokenizer.decode(&tokens.ids), ["touch", "the", UNK]);
        let empty = tokenizer.encode("", 4).unwrap();
        assert_eq!((empty.len, empty.ids), (0, vec![0; 4]));
        // Same words, same bytes, same hash.
        let again = word_level_json(["marker", "red", "the", "touch", "touch"]);
        assert_eq!(sha256_hex(again.as_bytes()), tokenizer.sha256());
    }

    #[test]
    fn a_file_without_the_special_ids_is_refused() {
        let json = word_level_json(["a"]).replace("\"[PAD]\": 0", "\"[PAD]\": 7");
        let e = InstructionTokenizer::from_json(&json).unwrap_err();
        assert!(e.contains("[PAD]"), "{e}");
        assert!(InstructionTokenizer::from_json("{").is_err());
    }

    #[test]
    fn the_shipped_tokenizer_loads() {
        let tokenizer = InstructionTokenizer::shipped();
        let tokens = tokenizer.encode("touch the red marker", 16).unwrap();
        assert_eq!(tokens.unknown, 0);
    }
}
