import Kafka
import Postgres

/// The SQL of the crash-loop breaker (see docs/reliability.md, "Crash-loop breaker"): which
/// processes of a consumer group run, when one was last found dead, and which record of a
/// partition on probation is in progress. Every value is a bound parameter.
public struct RunStore: Sendable {
    private let db: PostgresClient

    public init(db: PostgresClient) { self.db = db }

    public struct Check: Sendable, Equatable {
        /// application_name of the runs this call found dead (and removed).
        public var deadRuns: [String]
        /// Seconds since an instance of the group was last found dead (by anyone); nil: never.
        public var secondsSinceUncleanExit: Double?
        public init(deadRuns: [String], secondsSinceUncleanExit: Double?) {
            self.deadRuns = deadRuns
            self.secondsSinceUncleanExit = secondsSinceUncleanExit
        }
    }

    /// In one statement: registers or refreshes this run (with the application_name its session
    /// really carries, which a URL parameter may override), removes the group's runs that have
    /// no session left (the process died: PostgreSQL ends a dead client's sessions at once) or
    /// no heartbeat for `staleAfterSeconds`, notes the group's unclean exit when it found any,
    /// and says when the group's last one was seen.
    public func check(groupId: String, runId: String, staleAfterSeconds: Int) async throws -> Check {
        // A statement's CTEs see one snapshot: the unclean exit noted here is read from `noted`.
        let rows = try await db.query(
            """
            WITH own AS (
                INSERT INTO order_service_runs (group_id, run_id, application_name)
                VALUES ($1::text, $2::text, current_setting('application_name'))
                ON CONFLICT (group_id, run_id) DO UPDATE
                    SET heartbeat_at = now(), application_name = EXCLUDED.application_name
            ), dead AS (
                DELETE FROM order_service_runs r
                WHERE r.group_id = $1::text AND r.run_id <> $2::text
                  AND (r.heartbeat_at < now() - make_interval(secs => $3)
                       OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.application_name = r.application_name))
                RETURNING r.application_name
            ), noted AS (
                INSERT INTO order_service_unclean_exits AS u (group_id, seen_at, runs)
                SELECT $1::text, now(), count(*) FROM dead HAVING count(*) > 0
                ON CONFLICT (group_id) DO UPDATE SET seen_at = EXCLUDED.seen_at, runs = u.runs + EXCLUDED.runs
                RETURNING u.seen_at
            )
            SELECT (SELECT string_agg(application_name, ',' ORDER BY application_name) FROM dead),
                   extract(epoch FROM now() - coalesce(
                       (SELECT seen_at FROM noted),
                       (SELECT seen_at FROM order_service_unclean_exits WHERE group_id = $1::text)))::float8
            """, [groupId, runId, staleAfterSeconds]
        ).rows
        guard let row = rows.first else { return Check(deadRuns: [], secondsSinceUncleanExit: nil) }
        let dead: String? = try row.decode(0)
        return Check(
            deadRuns: dead.map { $0.split(separator: ",").map(String.init) } ?? [],
            secondsSinceUncleanExit: try row.decode(1))
    }

    /// A clean stop: this run is no longer running.
    public func deregister(groupId: String, runId: String) async throws {
        _ = try await db.query("DELETE FROM order_service_runs WHERE group_id = $1 AND run_id = $2", [groupId, runId])
    }

    /// Forgets what no running group can need: runs silent for a day (a group that no longer
    /// runs leaves its rows behind), markers untouched for a week.
    public func removeLeftovers() async throws {
        _ = try await db.query("DELETE FROM order_service_runs WHERE heartbeat_at < now() - interval '1 day'")
        _ = try await db.query("DELETE FROM order_service_in_progress WHERE updated_at < now() - interval '7 days'")
    }

    /// Marks `offset` of the partition in progress by this run; returns how many other runs had
    /// this very record in progress before and never finished it (0 for a record new to the
    /// marker). A mark older than `forgetAfterSeconds` counts nothing (offsets start again when a
    /// topic is re-created).
    public func markInProgress(groupId: String, _ tp: TopicPartition, offset: Int64, runId: String, forgetAfterSeconds: Int = 3_600)
        async throws -> Int
    {
        let rows = try await db.query(
            """
            INSERT INTO order_service_in_progress AS m (group_id, topic, partition, record_offset, run_id, attempts)
            VALUES ($1, $2, $3, $4, $5, 1)
            ON CONFLICT (group_id, topic, partition, record_offset) DO UPDATE SET
                attempts = CASE WHEN m.run_id = EXCLUDED.run_id THEN m.attempts
                                WHEN m.updated_at < now() - make_interval(secs => $6) THEN 1
                                ELSE m.attempts + 1 END,
                run_id = EXCLUDED.run_id, updated_at = now()
            RETURNING attempts
            """, [groupId, tp.topic, tp.partition, offset, runId, forgetAfterSeconds]
        ).rows
        guard let row = rows.first else { throw PersistFailure.unexpected("in-progress marker returned nothing") }
        let attempts: Int = try row.decode(0)
        return max(0, attempts - 1)
    }

    /// The record was answered: its marker goes, whichever run left it.
    public func clearInProgress(groupId: String, _ tp: TopicPartition, offset: Int64) async throws {
        _ = try await db.query(
            "DELETE FROM order_service_in_progress WHERE group_id = $1 AND topic = $2 AND partition = $3 AND record_offset = $4",
            [groupId, tp.topic, tp.partition, offset])
    }
}
