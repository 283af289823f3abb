//! docs/metrics.md's table must list exactly the metrics imds-tun exposes
//! (`imds_tun::metrics::NAMES`, which the metrics module's own tests hold to what a scrape
//! shows). A metric added without its row, or a row left behind by a rename, fails here.

use std::collections::BTreeSet;
use std::path::Path;

#[test]
fn the_metrics_table_lists_exactly_the_metrics_exposed() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let documented: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .collect();
    let documented_set: BTreeSet<&str> = documented.iter().copied().collect();
    assert_eq!(
        documented_set.len(),
        documented.len(),
        "a metric is listed twice"
    );
    let exposed: BTreeSet<&str> = imds_tun::metrics::NAMES.iter().copied().collect();
    assert_eq!(
        documented_set, exposed,
        "docs/metrics.md's table (left) against imds_tun::metrics::NAMES (right)"
    );
}
