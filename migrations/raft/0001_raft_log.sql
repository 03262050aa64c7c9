-- The raft log and vote of one member (raft.db). Owned by openraft through
-- server::raft::log_store; every append is one fsynced transaction.
CREATE TABLE raft_log (
    idx   INTEGER PRIMARY KEY,
    entry BLOB NOT NULL            -- serde_json of openraft::Entry<TypeConfig>
);

CREATE TABLE raft_meta (
    name  TEXT PRIMARY KEY,        -- 'vote' | 'committed' | 'last_purged'
    value BLOB NOT NULL            -- serde_json
);
