//! Precedence of one value: the flag beats the file, and the winner remembers where it came
//! from, so its error names `--flag-name` or `config: flag_name` (the same name, no
//! exceptions). Shared by every resolution (`resolve`, `proxy`, `hardening`).

use super::ConfigError;
use super::validate;

/// Where a value came from, so its error can point at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    Flag,
    File,
}

/// `config: instance_id` or `--instance-id`: the key is the [`Layer`](super::layer::Layer) field, the flag is the
/// same name with `-`, with no exceptions.
pub(super) fn label(origin: Origin, key: &str) -> String {
    match origin {
        Origin::File => format!("config: {key}"),
        Origin::Flag => format!("--{}", key.replace('_', "-")),
    }
}

/// The flag's value if given, else the file's.
pub(super) fn pick<T>(flag: Option<T>, file: Option<T>) -> Option<(T, Origin)> {
    match (flag, file) {
        (Some(value), _) => Some((value, Origin::Flag)),
        (None, Some(value)) => Some((value, Origin::File)),
        (None, None) => None,
    }
}

/// A repeatable setting as [`pick`] takes it: empty is "not given here".
pub(super) fn given<T: Clone>(values: &[T]) -> Option<Vec<T>> {
    (!values.is_empty()).then(|| values.to_vec())
}

/// Validates the winning text value of `key` with `check`.
pub(super) fn text<T>(
    chosen: Option<(String, Origin)>,
    key: &str,
    check: fn(&str) -> Result<T, String>,
) -> Result<Option<(T, Origin)>, ConfigError> {
    chosen
        .map(|(value, origin)| {
            check(&value)
                .map(|checked| (checked, origin))
                .map_err(|expected| {
                    ConfigError(format!("{} {value:?}: {expected}", label(origin, key)))
                })
        })
        .transpose()
}

/// Validates the winning number of `key`, or takes `default`.
pub(super) fn number(
    chosen: Option<(u64, Origin)>,
    key: &str,
    range: std::ops::RangeInclusive<u64>,
    unit: &str,
    default: u64,
) -> Result<u64, ConfigError> {
    match chosen {
        None => Ok(default),
        Some((value, origin)) => validate::in_range(value, range, unit)
            .map_err(|expected| ConfigError(format!("{} {value}: {expected}", label(origin, key)))),
    }
}

/// The winning number of a [`Layer`](super::layer::Layer) field, validated, or the default:
/// `number_of!(file, flags, hop_limit, 1..=64, "hops", 2)`. The field names the flag and the file
/// key both, so a setting is resolved in one line.
macro_rules! number_of {
    ($file:expr, $flags:expr, $field:ident, $range:expr, $unit:expr, $default:expr) => {
        $crate::config::origin::number(
            $crate::config::origin::pick($flags.$field, $file.$field),
            stringify!($field),
            $range,
            $unit,
            $default,
        )
    };
}
pub(super) use number_of;
