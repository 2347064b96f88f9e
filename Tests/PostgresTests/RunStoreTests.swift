import Foundation
import Kafka
import OrderCore
import Postgres
import TestSupport
import Testing

/// The crash-loop breaker's SQL against the real server: a run whose sessions are gone is found
/// dead (by pg_stat_activity), the group remembers it, and in-progress markers count the runs
/// that left a record unfinished.
@Suite("Run registry and in-progress markers", .timeLimit(.minutes(2)))
struct RunStoreTests {
    /// A pool whose sessions carry `applicationName`, on a migrated database.
    static func client(_ applicationName: String) async throws -> PostgresClient {
        var configuration = TestDatabase.configuration(poolSize: 2)
        configuration.applicationName = applicationName
        let client = PostgresClient(configuration: configuration, logger: TestDatabase.logger)
        _ = try await MigrationRunner(client: client, logger: TestDatabase.logger, table: OrderSchema.migrationsTable)
            .migrate(OrderSchema.migrations)
        return client
    }

    @Test func aRunWhoseSessionsAreGoneIsFoundDeadOnceAndTheGroupRemembersIt() async throws {
        let group = TestDatabase.uniqueName("group")
        let nameA = "order-service/test/\(TestDatabase.uniqueName("a"))"
        let nameB = "order-service/test/\(TestDatabase.uniqueName("b"))"
        let a = try await Self.client(nameA)
        let b = try await Self.client(nameB)
        do {
            let storeA = RunStore(db: a)
            let storeB = RunStore(db: b)
            #expect(try await storeA.check(groupId: group, runId: "a", staleAfterSeconds: 60) == .init(deadRuns: [], secondsSinceUncleanExit: nil))
            // A is alive (its session is open): B finds nothing.
            #expect(try await storeB.check(groupId: group, runId: "b", staleAfterSeconds: 60) == .init(deadRuns: [], secondsSinceUncleanExit: nil))

            await a.close()  // A's process "dies": its sessions end
            var found: RunStore.Check?
            let deadline = ContinuousClock.now + .seconds(10)
            while ContinuousClock.now < deadline {
                let check = try await storeB.check(groupId: group, runId: "b", staleAfterSeconds: 60)
                if !check.deadRuns.isEmpty { found = check; break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(found?.deadRuns == [nameA])
            // The unclean exit is dated when it was found (just now), not at some older time; the
            // upper bound is generous for a loaded machine.
            #expect((found?.secondsSinceUncleanExit ?? -1) >= 0 && (found?.secondsSinceUncleanExit ?? 99) < 30)
            // Removed once; the group still knows when.
            let again = try await storeB.check(groupId: group, runId: "b", staleAfterSeconds: 60)
            #expect(again.deadRuns.isEmpty)
            #expect((again.secondsSinceUncleanExit ?? -1) >= 0)

            // A clean stop is no unclean exit; a silent run is one after staleAfterSeconds.
            let otherGroup = TestDatabase.uniqueName("group")
            _ = try await storeB.check(groupId: otherGroup, runId: "b", staleAfterSeconds: 60)
            _ = try await storeB.check(groupId: otherGroup, runId: "b2", staleAfterSeconds: 60)  // same session name: alive
            try await storeB.deregister(groupId: otherGroup, runId: "b2")
            #expect(try await storeB.check(groupId: otherGroup, runId: "b", staleAfterSeconds: 60).secondsSinceUncleanExit == nil)
            _ = try await b.query(
                "UPDATE order_service_runs SET heartbeat_at = now() - interval '2 minutes' WHERE group_id = $1 AND run_id = $2",
                [otherGroup, "b"])
            _ = try await storeB.check(groupId: otherGroup, runId: "b3", staleAfterSeconds: 60)
            #expect(try await storeB.check(groupId: otherGroup, runId: "b3", staleAfterSeconds: 60).secondsSinceUncleanExit != nil)
        } catch {
            await b.close()
            throw error
        }
        await b.close()
    }

    @Test func markersCountTheRunsThatLeftTheSameRecordUnfinished() async throws {
        let client = try await Self.client("order-service-tests")
        do {
            let store = RunStore(db: client)
            let group = TestDatabase.uniqueName("group")
            let tp = TopicPartition("cart_requests", 3)
            #expect(try await store.markInProgress(groupId: group, tp, offset: 40, runId: "r1") == 0)
            #expect(try await store.markInProgress(groupId: group, tp, offset: 40, runId: "r1") == 0)  // a retry of the same run
            // r1 died with offset 40 in progress; r2 first handles the earlier records again.
            #expect(try await store.markInProgress(groupId: group, tp, offset: 38, runId: "r2") == 0)
            try await store.clearInProgress(groupId: group, tp, offset: 38)
            #expect(try await store.markInProgress(groupId: group, tp, offset: 40, runId: "r2") == 1)
            #expect(try await store.markInProgress(groupId: group, tp, offset: 40, runId: "r3") == 2)
            // Another partition and another group have markers of their own.
            #expect(try await store.markInProgress(groupId: group, TopicPartition("cart_requests", 4), offset: 40, runId: "r3") == 0)
            #expect(try await store.markInProgress(groupId: group + "x", tp, offset: 40, runId: "r3") == 0)
            // Answered: the marker goes, and the record would start afresh.
            try await store.clearInProgress(groupId: group, tp, offset: 40)
            #expect(try await store.markInProgress(groupId: group, tp, offset: 40, runId: "r4") == 0)
            // A mark older than forgetAfterSeconds counts nothing.
            _ = try await client.query(
                "UPDATE order_service_in_progress SET updated_at = now() - interval '2 hours' WHERE group_id = $1", [group])
            #expect(try await store.markInProgress(groupId: group, tp, offset: 40, runId: "r5") == 0)
            _ = try await client.query("DELETE FROM order_service_in_progress WHERE group_id IN ($1, $2)", [group, group + "x"])
        } catch {
            await client.close()
            throw error
        }
        await client.close()
    }
}
