//! JSONL datasets: rows, configurable fields, metadata, and errors naming line and field.

use r1_host::io::{DatasetFields, IoError, parse_jsonl, read_jsonl};

fn parse(text: &str) -> Result<Vec<r1_host::io::DatasetRow>, IoError> {
    parse_jsonl(text.as_bytes(), "data.jsonl", &DatasetFields::sft())
}

#[test]
fn rows_keep_prompt_completion_and_their_line() {
    let rows =
        parse("{\"prompt\":\"2+2=\",\"completion\":\"4\"}\n\n{\"prompt\":\"a\",\"completion\":\"b\"}\n").expect("ok");
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].prompt.as_str(), rows[0].target.as_str(), rows[0].line),
        ("2+2=", "4", 1)
    );
    assert_eq!(rows[1].line, 3, "blank lines count toward line numbers");
}

#[test]
fn extra_fields_become_metadata_strings() {
    let rows = parse(r#"{"prompt":"p","completion":"c","task":"math","level":3,"tags":["a"]}"#).expect("ok");
    assert_eq!(
        rows[0].metadata,
        [
            ("level".to_string(), "3".to_string()),
            ("tags".into(), "[\"a\"]".into()),
            ("task".into(), "math".into())
        ]
    );
}

#[test]
fn field_names_are_configurable() {
    let text = b"{\"question\":\"6*7?\",\"answer\":42}\r\n";
    let fields = DatasetFields {
        prompt: "question".into(),
        target: "answer".into(),
        numeric_target: true,
    };
    let rows = parse_jsonl(text, "gsm.jsonl", &fields).expect("ok");
    assert_eq!((rows[0].prompt.as_str(), rows[0].target.as_str()), ("6*7?", "42"));
    assert!(rows[0].metadata.is_empty());
}

#[test]
fn unparseable_line_reports_its_number() {
    let text = "{\"prompt\":\"a\",\"completion\":\"b\"}\n{\"prompt\":\"a\",\"completion\":\"b\"}\n{\"prompt\": oops}\n";
    match parse(text) {
        Err(IoError::DatasetLine { line, detail, file }) => {
            assert_eq!(line, 3);
            assert_eq!(file, "data.jsonl");
            assert!(detail.contains("column"), "{detail}");
        }
        other => panic!("expected a line error, got {other:?}"),
    }
}

#[test]
fn missing_field_is_named_with_its_line() {
    let text = "{\"prompt\":\"a\",\"completion\":\"b\"}\n{\"prompt\":\"a\"}\n";
    let err = parse(text).expect_err("missing completion");
    assert!(
        matches!(&err, IoError::MissingField { line: 2, field, .. } if field == "completion"),
        "{err}"
    );
    assert_eq!(err.to_string(), "data.jsonl, line 2: missing field `completion`");
    let err = parse_jsonl(b"{\"prompt\":\"a\"}", "g", &DatasetFields::grpo()).expect_err("missing answer");
    assert!(matches!(&err, IoError::MissingField { field, .. } if field == "answer"));
}

#[test]
fn non_object_rows_and_non_text_fields_are_errors() {
    let err = parse("[1, 2]").expect_err("array row");
    assert!(
        matches!(&err, IoError::DatasetLine { line: 1, detail, .. } if detail.contains("an array")),
        "{err}"
    );
    let err = parse("{\"prompt\":{\"x\":1},\"completion\":\"c\"}").expect_err("object prompt");
    assert!(err.to_string().contains("field `prompt` must be a string"), "{err}");
}

#[test]
fn empty_dataset_is_an_error() {
    for text in ["", "\n\n  \n"] {
        assert!(matches!(parse(text), Err(IoError::EmptyDataset { .. })), "{text:?}");
    }
}

#[test]
fn invalid_utf8_reports_its_line() {
    let err = parse_jsonl(
        b"{\"prompt\":\"a\",\"completion\":\"b\"}\n{\"prompt\":\"\xff\"}",
        "d",
        &DatasetFields::sft(),
    )
    .expect_err("bad utf8");
    assert!(matches!(err, IoError::DatasetLine { line: 2, .. }));
}

#[test]
fn utf8_bom_is_ignored_and_files_are_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("d.jsonl");
    std::fs::write(&path, b"\xEF\xBB\xBF{\"prompt\":\"p\",\"completion\":\"c\"}").expect("write");
    let rows = read_jsonl(&path, &DatasetFields::sft()).expect("read");
    assert_eq!(rows[0].prompt, "p");
    let err = read_jsonl(&dir.path().join("none.jsonl"), &DatasetFields::sft()).expect_err("missing file");
    assert!(matches!(err, IoError::File { .. }));
}
