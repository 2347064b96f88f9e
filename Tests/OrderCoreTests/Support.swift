import Foundation
import Kafka
import Synchronization
import Testing

@testable import OrderCore

/// Shared fixtures for the OrderCore unit tests. Nothing here touches a broker or a database.
enum Fixture {
    /// The repository's topics.yaml (two levels above this file's folder).
    static var repoTopicsYAMLPath: String {
        URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("topics.yaml").path
    }

    static func repoTopicsYAML() throws -> String {
        try String(contentsOfFile: repoTopicsYAMLPath, encoding: .utf8)
    }

    static func repoTopics() throws -> Topics { try Topics.parse(yaml: repoTopicsYAML()) }

    static let logicalTopics: [(logical: String, role: String, response: String?)] = [
        ("cart_requests", "request", "cart_responses"), ("cart_responses", "response", nil),
        ("order_requests", "request", "order_responses"), ("order_responses", "response", nil),
        ("admin_requests", "request", "admin_responses"), ("admin_responses", "response", nil),
        ("get_product_details", "upstream_request", nil), ("product_details", "upstream_reply", nil),
        ("inventory_check", "upstream_request", nil), ("inventory_check_results", "upstream_reply", nil),
        ("inventory_deduction", "upstream_request", nil), ("inventory_deduction_results", "upstream_reply", nil),
        ("order_notification", "event", nil), ("order_service_dlq", "dead_letter", nil),
    ]

    /// A minimal, complete topics file. `names` overrides real names, `roles` roles, `responses`
    /// response topics (nil value: leave it out); `dropping` leaves topics out; `extra` is appended.
    static func yaml(
        names: [String: String] = [:], roles: [String: String] = [:], responses: [String: String?] = [:],
        dropping: Set<String> = [], extra: String = ""
    ) -> String {
        var out = "topics:\n"
        for t in logicalTopics where !dropping.contains(t.logical) {
            out += "  \(t.logical):\n    name: \(names[t.logical] ?? t.logical)\n    role: \(roles[t.logical] ?? t.role)\n"
            let response = responses.keys.contains(t.logical) ? responses[t.logical]! : t.response
            if let response { out += "    response_topic: \(response)\n" }
        }
        return out + extra
    }

    static func topics(names: [String: String] = [:]) -> Topics {
        // A fixture that does not parse is a bug in the test itself.
        try! Topics.parse(yaml: yaml(names: names))
    }

    static func record(
        topic: String = "cart_requests", partition: Int32 = 0, offset: Int64 = 0, key: [UInt8]? = Array("42".utf8),
        value: [UInt8]? = Array(#"{"action":"get_cart","user_id":42}"#.utf8), headers: [KafkaHeader] = []
    ) -> KafkaRecord {
        KafkaRecord(topic: topic, partition: partition, offset: offset, key: key, value: value, headers: headers)
    }
}

/// Thread-safe append-only log for observing concurrent effects.
final class Log<Element: Sendable>: Sendable {
    private let items = Mutex<[Element]>([])
    func append(_ e: Element) { items.withLock { $0.append(e) } }
    var all: [Element] { items.withLock { $0 } }
    var count: Int { items.withLock { $0.count } }
}

/// A gate a task waits on until the test opens it.
actor Gate {
    private var isOpen = false
    private var waiters: [CheckedContinuation<Void, Never>] = []
    func wait() async {
        if isOpen { return }
        await withCheckedContinuation { waiters.append($0) }
    }
    func open() {
        isOpen = true
        waiters.forEach { $0.resume() }
        waiters = []
    }
}

/// Polls `condition` until it holds; records an issue (and returns false) after a generous
/// deadline so a broken implementation fails instead of hanging. Not a speed assertion.
@discardableResult
func eventually(
    _ what: String, timeout: Duration = .seconds(20), sourceLocation: SourceLocation = #_sourceLocation,
    _ condition: () async -> Bool
) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(2))
    }
    if await condition() { return true }
    Issue.record("timed out waiting for: \(what)", sourceLocation: sourceLocation)
    return false
}
