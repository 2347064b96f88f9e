import Foundation
import Kafka
import Yams

/// The topics of CONTRACT section 1, as declared in topics.yaml. The code refers to topics by
/// their logical names; the file maps each to its real name.
public struct Topics: Sendable, Equatable {
    public enum Role: String, Sendable {
        case request, response, event
        case upstreamRequest = "upstream_request"
        case upstreamReply = "upstream_reply"
        case deadLetter = "dead_letter"
        /// Optional: the service's periodic metrics records.
        case metrics
    }

    public struct Entry: Sendable, Equatable {
        public var logicalName: String
        public var spec: TopicSpec
        public var role: Role
        /// For request topics: the logical name of the default response topic.
        public var responseTopic: String?
        public var name: String { spec.name }
    }

    public var entries: [String: Entry]

    public static let requiredLogicalNames: [String: Role] = [
        "cart_requests": .request, "cart_responses": .response,
        "order_requests": .request, "order_responses": .response,
        "admin_requests": .request, "admin_responses": .response,
        "get_product_details": .upstreamRequest, "product_details": .upstreamReply,
        "inventory_check": .upstreamRequest, "inventory_check_results": .upstreamReply,
        "inventory_deduction": .upstreamRequest, "inventory_deduction_results": .upstreamReply,
        "order_notification": .event, "order_service_dlq": .deadLetter,
    ]

    /// The real name of a topic given its logical name.
    public func name(_ logical: String) -> String { entries[logical]?.name ?? logical }

    public var cartRequests: String { name("cart_requests") }
    public var orderRequests: String { name("order_requests") }
    public var adminRequests: String { name("admin_requests") }
    public var productRequests: String { name("get_product_details") }
    public var productReplies: String { name("product_details") }
    public var inventoryCheckRequests: String { name("inventory_check") }
    public var inventoryCheckReplies: String { name("inventory_check_results") }
    public var deductionRequests: String { name("inventory_deduction") }
    public var deductionResults: String { name("inventory_deduction_results") }
    public var notifications: String { name("order_notification") }
    public var deadLetters: String { name("order_service_dlq") }
    /// The metrics topic, when topics.yaml declares one (role `metrics`).
    public var metricsTopic: String? { entries.values.first { $0.role == .metrics }?.name }

    /// Real names of every topic declared as a response topic (valid `reply-to` targets).
    public var responseTopicNames: Set<String> { Set(entries.values.filter { $0.role == .response }.map(\.name)) }

    /// Which kind of request a topic carries, by real name.
    public func requestKind(ofTopic topic: String) -> RequestTopicKind? {
        if topic == cartRequests { return .cart }
        if topic == orderRequests { return .order }
        if topic == adminRequests { return .admin }
        return nil
    }

    /// The default response topic (real name) for a request topic (real name).
    public func defaultResponseTopic(forRequestTopic topic: String) -> String? {
        entries.values.first { $0.name == topic && $0.role == .request }
            .flatMap { $0.responseTopic }.map(name)
    }

    public var specs: [TopicSpec] { entries.values.map(\.spec).sorted { $0.name < $1.name } }

    public static func load(path: String) throws -> Topics {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError("cannot read topics file \(path)")
        }
        return try parse(yaml: String(decoding: data, as: UTF8.self))
    }

    public static func parse(yaml: String) throws -> Topics {
        let root: Any?
        do { root = try Yams.load(yaml: yaml) } catch { throw ConfigurationError("topics file is not valid YAML: \(error)") }
        guard let top = root as? [String: Any], let topics = top["topics"] as? [String: Any] else {
            throw ConfigurationError("topics file must have a 'topics' mapping")
        }
        var entries: [String: Entry] = [:]
        for (logical, raw) in topics {
            guard let t = raw as? [String: Any] else { throw ConfigurationError("topic \(logical) must be a mapping") }
            guard let roleText = t["role"] as? String, let role = Role(rawValue: roleText) else {
                throw ConfigurationError("topic \(logical) needs a role (request, response, upstream_request, upstream_reply, event, dead_letter, metrics)")
            }
            if let raw = t["name"], !(raw is String) { throw ConfigurationError("topic \(logical): name must be a string") }
            for field in ["partitions", "replication_factor"] {
                if let raw = t[field], !(raw is Int) { throw ConfigurationError("topic \(logical): \(field) must be an integer") }
            }
            let name = (t["name"] as? String) ?? logical
            guard !name.isEmpty, name.count <= 249,
                name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "_" || $0 == "-") })
            else { throw ConfigurationError("topic \(logical) has an invalid name '\(name)'") }
            let partitions = (t["partitions"] as? Int) ?? 1
            let rf = (t["replication_factor"] as? Int) ?? 1
            guard (1...Int(Int32.max)).contains(partitions), (1...Int(Int16.max)).contains(rf) else {
                throw ConfigurationError("topic \(logical): partitions must be 1…\(Int32.max) and replication_factor 1…\(Int16.max)")
            }
            var configs: [String: String] = [:]
            for (k, v) in (t["configs"] as? [String: Any]) ?? [:] { configs[k] = "\(v)" }
            entries[logical] = Entry(
                logicalName: logical,
                spec: TopicSpec(name: name, partitions: Int32(partitions), replicationFactor: Int32(rf), configs: configs),
                role: role, responseTopic: t["response_topic"] as? String)
        }
        for (logical, role) in requiredLogicalNames {
            guard let e = entries[logical] else { throw ConfigurationError("topics file lacks topic \(logical)") }
            guard e.role == role else { throw ConfigurationError("topic \(logical) must have role \(role.rawValue)") }
        }
        for e in entries.values where e.role == .request {
            guard let r = e.responseTopic, entries[r]?.role == .response else {
                throw ConfigurationError("request topic \(e.logicalName) needs a response_topic that is a response topic")
            }
        }
        let names = entries.values.map(\.name)
        guard Set(names).count == names.count else { throw ConfigurationError("two topics share a name") }
        return Topics(entries: entries)
    }
}

public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
