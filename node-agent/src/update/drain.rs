//! Draining: how many placements still name this machine. The engine moves
//! them away once the machine record says `draining`.

use api::client::{GetOptions, ETCD_KEY_NOT_FOUND};
use api::fleet::{Assignment, PLACEMENTS_DIR};
use api::keys::Node;
use api::{Client, ClientError};

/// The number of placements on `machine_id` (a quorum read of `/_shoal/placements`).
pub async fn placed_here(client: &Client, machine_id: &str) -> Result<usize, ClientError> {
    let opts = GetOptions {
        recursive: true,
        sorted: false,
        quorum: true,
    };
    match client.get(PLACEMENTS_DIR, opts).await {
        Ok(answer) => {
            let mut values = Vec::new();
            values_of(&answer.body.node, &mut values);
            Ok(count_on(machine_id, &values))
        }
        Err(e) if e.etcd_code() == Some(ETCD_KEY_NOT_FOUND) => Ok(0),
        Err(e) => Err(e),
    }
}

/// The values of the leaves under `node`.
fn values_of(node: &Node, out: &mut Vec<String>) {
    match &node.nodes {
        Some(children) => children.iter().for_each(|n| values_of(n, out)),
        None => out.extend(node.value.clone()),
    }
}

/// How many of the placement `values` name `machine_id` (unreadable ones are skipped).
pub fn count_on(machine_id: &str, values: &[String]) -> usize {
    values
        .iter()
        .filter_map(|v| serde_json::from_str::<Assignment>(v).ok())
        .filter(|a| a.machine_id == machine_id)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_this_machines_placements() {
        let on = |m: &str| {
            serde_json::to_string(&Assignment {
                unit: "web".into(),
                instance: "web@1".into(),
                machine_id: m.into(),
                revision: 1,
            })
            .expect("json")
        };
        let values = vec![on("m1"), on("m2"), on("m1"), "garbage".into()];
        assert_eq!(count_on("m1", &values), 2);
        assert_eq!(count_on("m3", &values), 0);
    }
}
