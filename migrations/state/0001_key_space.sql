-- The applied key space of one member (state.db): a projection of the raft
-- log up to `last_applied`, plus the latest snapshot that lets the log be
-- compacted. Rebuilt from a snapshot on install; never edited by hand.
CREATE TABLE kv (
    key            TEXT PRIMARY KEY,
    value          TEXT,           -- NULL for a directory
    created_index  INTEGER NOT NULL,
    modified_index INTEGER NOT NULL,
    expiration     TEXT            -- RFC 3339, NULL when permanent
);

CREATE TABLE sm_meta (
    name  TEXT PRIMARY KEY,        -- 'last_applied' | 'membership' | 'etcd_index'
    value BLOB NOT NULL            -- serde_json
);

CREATE TABLE snapshot (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    meta  BLOB NOT NULL,           -- serde_json of openraft::SnapshotMeta
    data  BLOB NOT NULL            -- serde_json of keyspace::Image
);
