//! The JSON configuration file: its schema and how it is read.
//!
//! One flat object whose keys are the fields of [`Layer`]: the long flag names with `_` for `-`
//! (`instance_id` for `--instance-id`), so the file and the command line describe the same
//! settings with one type. Every key is optional; unknown keys are an error so a typo is
//! reported instead of silently ignored. This module owns reading the file and saying what is
//! wrong with it without showing a value; the schema itself is `config::layer`.

use std::path::Path;

use serde::Deserialize;

use super::ConfigError;
use super::layer::Layer;
use super::named_file::{self, Opener};
use crate::control::protocol::{AT_EXPECTED, SCENARIO_COMMANDS, Step};

/// Reads and parses `path` with `opener`'s rights; any failure is one line naming the file
/// (and line, column and key for JSON), never a value from it.
pub fn load(path: &Path, opener: &Opener) -> Result<Layer, ConfigError> {
    let bytes = named_file::read(path, "--config", opener, named_file::CONFIG_CAP)
        .map_err(|error| ConfigError(error.to_string()))?;
    parse(&bytes).map_err(|error| ConfigError(format!("--config {}: {error}", path.display())))
}

/// Why a config file's text is not a configuration: where, which key, and what was expected.
///
/// serde's own messages quote the offending value (`invalid type: string "hunter2", expected
/// u64`), and the file may be a secret someone named by mistake, so the value never appears:
/// only the position, the key (if it looks like a setting name) and the kinds involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} column {column}: {problem}")]
pub struct ParseError {
    /// The line of the file, from 1, where serde stopped.
    pub line: usize,
    /// The column in that line, from 1.
    pub column: usize,
    problem: String,
}

/// Parses the JSON text of a config file.
pub fn parse(bytes: &[u8]) -> Result<Layer, ParseError> {
    let at = |error: &serde_json::Error, problem: String| ParseError {
        line: error.line(),
        column: error.column(),
        problem,
    };
    // First the shape: one object. Syntax messages (`expected value`, `EOF while parsing`) name
    // characters the parser wanted, never what it found.
    if let Err(error) = serde_json::from_slice::<Entries>(bytes) {
        return Err(match error.classify() {
            serde_json::error::Category::Data => at(
                &error,
                "the file must hold one JSON object, e.g. {\"region\": \"eu-west-1\"}".into(),
            ),
            _ => at(
                &error,
                format!("not valid JSON: {}", without_position(&error)),
            ),
        });
    }
    serde_json::from_slice(bytes).map_err(|error| at(&error, describe_data_error(bytes, &error)))
}

/// Why a scenario file's text is not a scenario: where (when serde can tell), which step, and
/// what the step should have been, without showing what it was (the rule of [`ParseError`]: a
/// file named by mistake may be a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    /// The line and column (from 1) where serde stopped, when it read the whole file.
    pub position: Option<(usize, usize)>,
    problem: String,
}

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some((line, column)) = self.position {
            write!(formatter, "line {line} column {column}: ")?;
        }
        formatter.write_str(&self.problem)
    }
}

impl std::error::Error for ScenarioError {}

/// A scenario's shape, as the messages show it.
const SCENARIO_EXAMPLE: &str =
    "[{\"at\": \"+30s\", \"command\": \"spot\", \"action\": \"terminate\"}]";

/// Parses the JSON text of a scenario (`--scenario`, `ctl play`): a list of steps, each one of
/// [`SCENARIO_COMMANDS`] with its keys and an `at`. A mistake is named by step and key, with
/// what the key takes; nothing of the file is repeated, and the list of commands is the
/// scenario's, not every request the control protocol knows.
pub fn parse_scenario(bytes: &[u8]) -> Result<Vec<Step>, ScenarioError> {
    let problem =
        |position: Option<(usize, usize)>, problem: String| ScenarioError { position, problem };
    let steps: Vec<serde_json::Value> = match serde_json::from_slice(bytes) {
        Ok(steps) => steps,
        Err(error) => {
            let position = Some((error.line(), error.column()));
            return Err(match error.classify() {
                serde_json::error::Category::Data => problem(
                    position,
                    format!("a scenario is a JSON list of steps, e.g. {SCENARIO_EXAMPLE}"),
                ),
                _ => problem(
                    position,
                    format!("not valid JSON: {}", without_position(&error)),
                ),
            });
        }
    };
    // The command first: serde would list every request of the protocol.
    for (index, step) in steps.iter().enumerate() {
        if let Some(why) = scenario_command_problem(step) {
            return Err(problem(None, format!("step {}: {why}", index + 1)));
        }
    }
    match serde_json::from_slice::<Vec<Step>>(bytes) {
        Ok(parsed) => Ok(parsed),
        Err(error) => {
            let position = Some((error.line(), error.column()));
            let failing = steps
                .iter()
                .enumerate()
                .find_map(|(index, step)| describe_step_error(step).map(|why| (index, why)));
            Err(match failing {
                Some((index, why)) => problem(position, format!("step {}: {why}", index + 1)),
                None => problem(
                    position,
                    "a step does not fit a scenario (not shown: it could be a secret)".to_owned(),
                ),
            })
        }
    }
}

/// Why `step` is not an object with a scenario command, if it is not.
fn scenario_command_problem(step: &serde_json::Value) -> Option<String> {
    let commands = SCENARIO_COMMANDS.join(", ");
    let Some(object) = step.as_object() else {
        return Some(format!(
            "expected an object such as {}",
            SCENARIO_EXAMPLE
                .trim_start_matches('[')
                .trim_end_matches(']')
        ));
    };
    match object.get("command") {
        None => Some(format!("missing `command`, one of {commands}")),
        Some(serde_json::Value::String(command))
            if SCENARIO_COMMANDS.contains(&command.as_str()) =>
        {
            None
        }
        Some(serde_json::Value::String(_)) => Some(format!(
            "`command`: expected one of {commands}, found another string"
        )),
        Some(other) => Some(format!(
            "`command`: expected one of {commands}, found {}",
            kind_of_value(other)
        )),
    }
}

/// Why `step` (a JSON object with a scenario command) is not a step: the first key that fails
/// on its own beside its command (the technique of [`describe_data_error`]), else what serde
/// says of the whole step, without values either way.
fn describe_step_error(step: &serde_json::Value) -> Option<String> {
    let alone = serde_json::from_value::<Step>(step.clone()).err()?;
    let object = step.as_object()?;
    let command = object.get("command")?.clone();
    for (key, value) in object {
        if key == "command" {
            continue;
        }
        let mut single = serde_json::Map::new();
        single.insert("command".to_owned(), command.clone());
        if key == "at" {
            single.insert("at".to_owned(), value.clone());
            // Every command's other keys have defaults in `clear`: only `at` can fail here.
            single.insert("command".to_owned(), "clear".into());
        } else {
            single.insert("at".to_owned(), 0.into());
            single.insert(key.clone(), value.clone());
        }
        let Err(error) = serde_json::from_value::<Step>(serde_json::Value::Object(single)) else {
            continue;
        };
        let message = error.to_string();
        if message.starts_with("missing field `") {
            continue;
        }
        if key == "at" {
            return Some(format!("`at`: {AT_EXPECTED}"));
        }
        if message.starts_with("unknown field `") {
            // serde lists the keys the command takes, written by the schema: safe to show.
            let expected = message
                .rsplit_once(", expected ")
                .map_or_else(String::new, |(_, keys)| format!(", expected {keys}"));
            let command = object.get("command").and_then(|c| c.as_str()).unwrap_or("");
            return Some(match setting_name(key) {
                Some(key) => format!("unknown key `{key}` for a {command} step{expected}"),
                None => format!(
                    "an unknown key for a {command} step (not shown: it does not look like a \
                     key name){expected}"
                ),
            });
        }
        let shown = setting_name(key).unwrap_or("(a key)");
        return Some(format!("`{shown}`: {}", describe_value_error(&message)));
    }
    Some(describe_value_error(&alone.to_string()))
}

/// A JSON value's kind, in the words of [`kind_of_unexpected`].
fn kind_of_value(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "true or false",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The object's entries in the order they are written (serde_json's `Map` sorts them).
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// serde_json's message without its ` at line L column C` tail (the position is given apart).
fn without_position(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let tail = format!(" at line {} column {}", error.line(), error.column());
    message.strip_suffix(&tail).unwrap_or(&message).to_owned()
}

/// Names the key whose value failed and what it should have been, without the value.
///
/// The key: the first entry, in written order, that fails on its own (serde_json stops at the
/// first failure in the text, so it is the one `error`'s position points into).
fn describe_data_error(bytes: &[u8], error: &serde_json::Error) -> String {
    let entries = serde_json::from_slice::<Entries>(bytes).map_or_else(|_| Vec::new(), |e| e.0);
    for (key, value) in entries {
        let single = serde_json::Value::Object(serde_json::Map::from_iter([(key.clone(), value)]));
        if let Err(alone) = serde_json::from_value::<Layer>(single) {
            let message = alone.to_string();
            if message.starts_with("unknown field `") {
                return match setting_name(&key) {
                    Some(key) => format!(
                        "unknown key `{key}` (keys are the long flag names with `_` for `-`, \
                         e.g. `instance_id`)"
                    ),
                    None => "an unknown key (not shown: it does not look like a setting name)"
                        .to_owned(),
                };
            }
            let key = setting_name(&key).unwrap_or("(a key)");
            return format!("`{key}`: {}", describe_value_error(&message));
        }
    }
    // Only a key given twice fails as a whole but not entry by entry; its name is a field name.
    let message = without_position(error);
    match message
        .strip_prefix("duplicate field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        Some(key) if setting_name(key).is_some() => format!("`{key}` is given twice"),
        _ => "a value does not fit its key (not shown: it could be a secret)".to_owned(),
    }
}

/// serde's data-error message for one key, with every quoted value taken out.
fn describe_value_error(message: &str) -> String {
    // `invalid type: <unexpected>, expected <expected>`: the expected part comes last and is
    // written by the schema, so the text after the last ", expected " is safe to show.
    let expected = message
        .rsplit_once(", expected ")
        .map(|(_, expected)| readable_expectation(expected));
    if let Some(found) = message.strip_prefix("invalid type: ") {
        let expected = expected.unwrap_or_else(|| "another type".to_owned());
        return format!("expected {expected}, found {}", kind_of_unexpected(found));
    }
    if let Some(found) = message.strip_prefix("invalid value: ") {
        let expected = expected.unwrap_or_else(|| "another value".to_owned());
        // A string that does not parse (`listen`, `tag`) is not "out of range".
        if found.starts_with("string ") {
            return format!("expected {expected}, found a string that is not one");
        }
        return format!(
            "{} out of range, expected {expected}",
            kind_of_unexpected(found)
        );
    }
    // A word outside an enumeration (`imdsv2`): serde lists the words, written by the schema.
    if message.starts_with("unknown variant `") {
        let expected = expected.unwrap_or_else(|| "another word".to_owned());
        return format!("expected {expected}, found another string");
    }
    if message.starts_with("invalid length ") {
        let expected = expected.unwrap_or_else(|| "another length".to_owned());
        return format!("wrong number of elements, expected {expected}");
    }
    // A field the schema requires (`public_key` needs `name`): the name is the schema's.
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
        .and_then(setting_name)
    {
        return format!("missing `{field}`");
    }
    // An unknown key inside a nested object (`public_key`).
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let name_end = rest.find('`').unwrap_or(rest.len());
        if let Some(name) = setting_name(&rest[..name_end]) {
            return format!(
                "unknown key `{name}`{}",
                expected.map_or_else(String::new, |expected| format!(", expected {expected}"))
            );
        }
        return "an unknown key inside it".to_owned();
    }
    "a value this key cannot take (not shown: it could be a secret)".to_owned()
}

/// What serde calls the unexpected value's kind, without the value after it.
fn kind_of_unexpected(text: &str) -> &'static str {
    const KINDS: [(&str, &str); 9] = [
        ("string", "a string"),
        ("integer", "an integer"),
        ("floating point", "a number with a fraction"),
        ("boolean", "true or false"),
        ("unit value", "null"),
        ("map", "an object"),
        ("sequence", "an array"),
        ("char", "a character"),
        ("byte array", "bytes"),
    ];
    KINDS
        .iter()
        .find(|(prefix, _)| text.starts_with(prefix))
        .map_or("another kind of value", |(_, kind)| kind)
}

/// serde's expectations in words a config author knows.
fn readable_expectation(expected: &str) -> String {
    match expected {
        "u64" | "u32" | "u16" => "a whole number".to_owned(),
        "a sequence" => "an array".to_owned(),
        "a map" => "an object".to_owned(),
        other if other.starts_with("struct ") => "an object".to_owned(),
        other => other.to_owned(),
    }
}

/// `name` if it looks like a setting name (so showing it cannot show a secret); else `None`.
fn setting_name(name: &str) -> Option<&str> {
    let plausible = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_');
    plausible.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_is_an_error_naming_it() {
        let error = parse(br#"{"instance_idd": "i-0123abcd"}"#).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("instance_idd"), "{message}");
        assert!(message.contains("line 1"), "{message}");
    }

    #[test]
    fn mfa_code_cannot_come_from_a_file() {
        assert!(parse(br#"{"mfa_code": "123456"}"#).is_err());
        let layer =
            parse(br#"{"role_arn": "arn:aws:iam::123456789012:role/app", "refresh_margin": 600}"#)
                .unwrap();
        assert_eq!(layer.refresh_margin, Some(600));
    }

    #[test]
    fn example_config_in_docs_parses() {
        let text = include_bytes!("../../docs/example-config.json");
        let layer = parse(text).unwrap();
        assert!(layer.instance_id.is_some());
        assert!(!layer.tag.is_empty());
    }

    #[test]
    fn unreadable_file_error_names_the_path() {
        let error = load(Path::new("/nonexistent/imds.json"), &Opener::OwnRights).unwrap_err();
        assert!(error.0.contains("/nonexistent/imds.json"), "{}", error.0);
    }

    #[test]
    fn invalid_json_error_names_path_and_position() {
        let dir = crate::temp_dir::TempDir::new();
        let path = dir.path().join("bad.json");
        std::fs::write(&path, "{\n  \"mtu\": \"big\"\n}").unwrap();
        let error = load(&path, &Opener::OwnRights).unwrap_err();
        assert!(error.0.contains("bad.json"), "{}", error.0);
        assert!(error.0.contains("line 2"), "{}", error.0);
    }

    fn message_of(text: &str) -> String {
        parse(text.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_by_key_and_position_but_not_shown() {
        let message =
            message_of("{\n  \"region\": \"eu-west-1\",\n  \"mtu\": \"hunter2-secret\"\n}");
        assert_eq!(
            message,
            "line 3 column 25: `mtu`: expected a whole number, found a string"
        );
        let message = message_of(r#"{"instance_id": ["hunter2-secret"]}"#);
        assert!(message.contains("`instance_id`"), "{message}");
        assert!(message.contains("found an array"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn a_value_out_of_range_is_not_shown() {
        let message = message_of(r#"{"mtu": -123456789}"#);
        assert!(
            message.contains("`mtu`: an integer out of range"),
            "{message}"
        );
        assert!(!message.contains("123456789"), "{message}");
    }

    #[test]
    fn nested_values_and_keys_are_not_shown() {
        let message = message_of(r#"{"public_key": {"name": 42424242, "openssh_key": "k"}}"#);
        assert!(
            message.contains("`public_key`: expected a string, found an integer"),
            "{message}"
        );
        assert!(!message.contains("42424242"), "{message}");
        let message = message_of(r#"{"public_key": {"name": "n"}}"#);
        assert!(
            message.contains("`public_key`: missing `openssh_key`"),
            "{message}"
        );
        let message = message_of(r#"{"tag": [true]}"#);
        assert!(
            message.contains("`tag`: expected a string, found true or false"),
            "{message}"
        );
    }

    #[test]
    fn an_unknown_key_is_named_only_if_it_looks_like_a_setting() {
        let message = message_of(r#"{"AKIAHUNTER2SECRETKEY": "x"}"#);
        assert!(message.contains("an unknown key (not shown"), "{message}");
        assert!(!message.contains("HUNTER2"), "{message}");
        let message = message_of(r#"{"region": "eu-west-1", "regoin": "x"}"#);
        assert!(message.contains("unknown key `regoin`"), "{message}");
        assert!(message.starts_with("line 1 column 32"), "{message}");
    }

    #[test]
    fn not_json_or_not_an_object_says_so_without_the_content() {
        // What `sudo imds-tun --config /etc/shadow` would have printed: the first line.
        let message = message_of("root:$y$j9T$hunter2secrethash:19000:0:99999:7:::\n");
        assert!(
            message.starts_with("line 1 column 1: not valid JSON: expected value"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
        let message = message_of(r#"["hunter2-secret", 5]"#);
        assert!(message.contains("must hold one JSON object"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        let message = message_of(r#"{"mtu": 1500, hunter2}"#);
        assert!(message.contains("not valid JSON"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn typed_values_that_do_not_parse_are_named_but_not_shown() {
        assert_eq!(
            message_of(r#"{"imdsv2": "hunter2"}"#),
            "line 1 column 20: `imdsv2`: expected `optional` or `required`, found another string"
        );
        let message = message_of(r#"{"tag": ["hunter2"]}"#);
        assert!(
            message.contains("`tag`: expected KEY=VALUE, found a string that is not one"),
            "{message}"
        );
        let message = message_of(r#"{"listen": ["hunter2"]}"#);
        assert!(
            message.contains("`listen`: expected ADDR:PORT such as"),
            "{message}"
        );
        for message in [
            message_of(r#"{"imdsv2": "hunter2"}"#),
            message_of(r#"{"tag": ["hunter2"]}"#),
            message_of(r#"{"listen": ["hunter2"]}"#),
        ] {
            assert!(!message.contains("hunter2"), "{message}");
        }
    }

    #[test]
    fn typed_values_parse() {
        let layer = parse(
            br#"{"imdsv2": "required", "tag": ["Name=web", "Team=a=b"], "listen": ["127.0.0.1:8080"]}"#,
        )
        .unwrap();
        assert_eq!(layer.imdsv2, Some(super::super::layer::Imdsv2::Required));
        assert_eq!(layer.tag[1].value, "a=b");
        assert_eq!(layer.listen[0].port(), 8080);
    }

    fn scenario_message(text: &str) -> String {
        parse_scenario(text.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn a_scenario_mistake_is_named_by_step_and_key_once_without_the_file_s_text() {
        let one_of = SCENARIO_COMMANDS.join(", ");
        let cases: [(&str, String); 11] = [
            (
                r#"[{"at": 0, "command": "clear"}, {"at": "+30s", "command": "spott-hunter2"}]"#,
                format!("step 2: `command`: expected one of {one_of}, found another string"),
            ),
            (
                r#"[{"at": "+30s", "command": "spot", "action": "hunter2"}]"#,
                "line 1 column 55: step 1: `action`: expected one of `terminate`, `stop`, \
                 `hibernate`, found another string"
                    .into(),
            ),
            (
                r#"[{"at": "+30s", "command": "spot", "action": "stop", "hunter": 1}]"#,
                "line 1 column 65: step 1: unknown key `hunter` for a spot step, expected \
                 `action` or `in`"
                    .into(),
            ),
            (
                r#"[{"at": "+30s", "command": "spot", "action": "stop", "AKIAhunter2": 1}]"#,
                "line 1 column 70: step 1: an unknown key for a spot step (not shown: it does \
                 not look like a key name), expected `action` or `in`"
                    .into(),
            ),
            (
                r#"[{"at": "hunter2", "command": "rebalance"}]"#,
                "line 1 column 17: step 1: `at`: expected seconds, or \"+30s\", \"+2m\", \"+1h\""
                    .into(),
            ),
            (
                r#"[{"at": 1, "command": "spot"}]"#,
                "line 1 column 29: step 1: missing `action`".into(),
            ),
            (
                r#"[{"at": 1, "command": "event", "code": "system-reboot", "in": "hunter2"}]"#,
                "line 1 column 72: step 1: `in`: expected a whole number, found a string".into(),
            ),
            (
                r#"[{"at": 1, "command": "end-event", "id": "hunter2", "how": "cancel"}]"#,
                format!("step 1: `command`: expected one of {one_of}, found another string"),
            ),
            (
                r#"[{"at": 1}]"#,
                format!("step 1: missing `command`, one of {one_of}"),
            ),
            (
                r#"["hunter2"]"#,
                "step 1: expected an object such as {\"at\": \"+30s\", \
                 \"command\": \"spot\", \"action\": \"terminate\"}"
                    .into(),
            ),
            (
                "hunter2",
                "line 1 column 1: not valid JSON: expected value".into(),
            ),
        ];
        for (text, wanted) in cases {
            let message = scenario_message(text);
            assert_eq!(message, wanted, "{text}");
            assert!(!message.contains("hunter2"), "{message}");
            assert_eq!(
                message.matches("line ").count(),
                usize::from(message.starts_with("line "))
            );
            for internal in ["end-event", "fault-list", "status", "play"] {
                assert!(!message.contains(internal), "{message}");
            }
        }
        let steps = parse_scenario(
            br#"[{"at": "+0s", "command": "rebalance"}, {"at": 30, "command": "fault-clear"}]"#,
        )
        .unwrap();
        assert_eq!(steps.len(), 2);
    }

    #[test]
    fn a_key_given_twice_is_named() {
        let message = message_of(r#"{"mtu": 1500, "mtu": 1400}"#);
        assert!(message.contains("`mtu` is given twice"), "{message}");
    }

    #[test]
    fn a_config_file_with_a_secret_of_the_wrong_type_does_not_leak_it_through_load() {
        let dir = crate::temp_dir::TempDir::new();
        let path = dir.path().join("imds.json");
        std::fs::write(&path, r#"{"duration": "AKIA-hunter2-secret"}"#).unwrap();
        let error = load(&path, &Opener::OwnRights).unwrap_err();
        assert!(error.0.starts_with("--config "), "{}", error.0);
        assert!(error.0.contains("`duration`"), "{}", error.0);
        assert!(!error.0.contains("hunter2"), "{}", error.0);
    }

    #[test]
    fn dev_zero_as_config_is_refused_at_once() {
        let error = load(Path::new("/dev/zero"), &Opener::OwnRights).unwrap_err();
        assert!(
            error
                .0
                .contains("--config /dev/zero: is a character device, not a regular file"),
            "{}",
            error.0
        );
    }
}
