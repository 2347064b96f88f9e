import Foundation
import Kafka
import OrderCore
import Testing
import TestSupport

extension EndToEndTests {
    @Test("operator commands: health, topics check, migrate, replay-dlq (dry run, replay, no second replay)")
    func operatorCommands() async throws {
        try await withSystem("operator") { system in
            var r = try await system.runCommand(["health", "--file", system.healthFile])
            #expect(r.status == 0, "\(r.output)")
            r = try await system.runCommand(["topics", "check"])
            #expect(r.status == 0, "\(r.output)")
            #expect(r.output.contains("all \(system.topics.entries.count) topics match"), "\(r.output)")
            #expect(!r.output.contains("retention too long"), "\(r.output)")
            // Replies remembered for a day, request records kept for a week (topics.yaml): a replay
            // after lost group offsets could apply effects again, so the check fails.
            r = try await system.runCommand(["topics", "check"], environment: ["ORDER_SERVICE_IDEMPOTENCY_RETENTION_HOURS": "24"])
            #expect(r.status == 1, "\(r.output)")
            for logical in ["cart_requests", "order_requests"] {
                #expect(r.output.contains("retention too long: request topic \(system.topics.name(logical)) keeps records for 604800000 ms"), "\(r.output)")
            }
            r = try await system.runCommand(["migrate"])
            #expect(r.status == 0)
            #expect(r.output.contains("up to date"))

            // A dead letter, then its replay to the source topic (answered again there).
            let key = "dlq-\(UUID().uuidString.prefix(8))"
            try await system.send("cart_requests", value: Array("{broken".utf8), key: key)
            _ = try await system.waitFor { $0.topic == system.topics.deadLetters && $0.key == Array(key.utf8) }
            r = try await system.runCommand(["replay-dlq", "--dry-run"])
            #expect(r.status == 0, "\(r.output)")
            #expect(r.output.contains("1 dead letter(s) to replay"), "\(r.output)")
            let firstListing = r.output.split(separator: "\n").filter { $0.contains("would replay") }
            r = try await system.runCommand(["replay-dlq"])
            #expect(r.output.contains("1 dead letter(s) replayed"), "\(r.output)")
            let cartResponses = system.topics.name("cart_responses")
            let deadline = ContinuousClock.now + .seconds(20)
            while system.records(on: "cart_responses").filter({ $0.key == Array(key.utf8) }).count < 2 && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(200))
            }
            let answers = system.records(on: "cart_responses").filter { $0.topic == cartResponses && $0.key == Array(key.utf8) }
            #expect(answers.count == 2)
            // Progress was committed: the first dead letter is not offered again; only the new one
            // (the replayed record is still malformed, so it was dead-lettered once more).
            _ = try await system.waitFor { r in r.topic == system.topics.deadLetters && r.key == Array(key.utf8) && r.header("dlq-replayed-from") != nil }
            r = try await system.runCommand(["replay-dlq", "--dry-run"])
            #expect(r.output.contains("1 dead letter(s) to replay"), "\(r.output)")
            let secondListing = r.output.split(separator: "\n").filter { $0.contains("would replay") }
            #expect(firstListing.count == 1 && secondListing.count == 1 && firstListing != secondListing)
            // A copy whose value was left out (too large to keep) is listed but never replayed:
            // an empty value would be another record.
            try await system.send(
                "order_service_dlq", value: [], key: "omitted-\(key)",
                headers: [KafkaHeader("dlq-source-topic", system.topics.name("cart_requests")), KafkaHeader("dlq-value-omitted", "2000000")])
            r = try await system.runCommand(["replay-dlq", "--dry-run"])
            #expect(r.output.contains("1 dead letter(s) to replay, 1 skipped"), "\(r.output)")
            #expect(r.output.contains("skipped (its value was not kept"), "\(r.output)")
            r = try await system.runCommand(["replay-dlq"])
            #expect(r.status == 0, "\(r.output)")
            #expect(r.output.contains("1 dead letter(s) replayed, 1 skipped"), "\(r.output)")

            // After a graceful stop the heartbeat and readiness files are gone and health fails.
            await system.process("order-service")?.stop()
            r = try await system.runCommand(["health", "--file", system.healthFile])
            #expect(r.status == 1)
            r = try await system.runCommand(["health", "--file", system.healthFile, "--ready"])
            #expect(r.status == 1)
            #expect(r.output.contains("not ready"), "\(r.output)")
        }
    }
}
