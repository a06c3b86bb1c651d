//! The tokenizer the vision-language policy ships is the one built from
//! every instruction word of every task (sim::instructions::vocabulary):
//! rebuilt here and compared byte for byte. After changing the
//! instruction templates, regenerate it with
//!
//!   CEREBELLUM_REGENERATE=1 cargo test --release --test vla_tokenizer

use cerebellum_policies::vla::tokenizer::{InstructionTokenizer, SHIPPED_JSON, word_level_json};
use cerebellum_sim::TaskKind;
use cerebellum_sim::instructions::{self, InstructionSet};

#[test]
fn the_shipped_tokenizer_is_built_from_every_instruction_word() {
    let vocabulary = instructions::vocabulary();
    let rebuilt = word_level_json(vocabulary.iter().map(String::as_str));
    if std::env::var_os("CEREBELLUM_REGENERATE").is_some() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../policies/assets/vla_tokenizer.json"
        );
        std::fs::write(path, &rebuilt).unwrap();
        return;
    }
    assert!(
        rebuilt == SHIPPED_JSON,
        "policies/assets/vla_tokenizer.json is stale; regenerate it with \
         CEREBELLUM_REGENERATE=1 cargo test --release --test vla_tokenizer"
    );
}

#[test]
fn every_phrasing_of_every_task_reads_without_unknown_words() {
    let tokenizer = InstructionTokenizer::shipped();
    for task in TaskKind::ALL {
        for set in [InstructionSet::Train, InstructionSet::HeldOut] {
            for template in instructions::templates(task, set) {
                for color in ["red", "green", "blue"] {
                    let text = instructions::fill(template, color);
                    let tokens = tokenizer.encode(&text, 16).unwrap();
                    assert_eq!(tokens.unknown, 0, "{text}");
                    assert_eq!(tokens.dropped, 0, "{text}");
                    assert_eq!(tokenizer.decode(&tokens.ids).join(" "), text);
                }
            }
        }
        let tokens = tokenizer.encode(task.instruction(), 16).unwrap();
        assert_eq!(tokens.unknown, 0, "{}", task.instruction());
    }
    // An operator's own words: unknown ones are counted, never a panic.
    let tokens = tokenizer
        .encode("Touch the crimson marker, please!", 16)
        .unwrap();
    assert_eq!(tokens.unknown, 2, "crimson and please");
}
