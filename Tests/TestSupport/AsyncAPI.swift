import Foundation
import Kafka
import OrderCore
import Yams

/// docs/asyncapi.yaml, parsed, with what the tests need of it: its channels, their messages, a
/// JSON Schema validator for the subset the document uses, and the comparison with topics.yaml.
public struct AsyncAPIDocument: @unchecked Sendable {
    /// The whole document as Yams gives it ([String: Any], [Any], String, Int, Double, Bool, NSNull).
    public let root: [String: Any]

    public static var path: String { TestSystem.repoRoot + "/docs/asyncapi.yaml" }

    public static func load(path: String = AsyncAPIDocument.path) throws -> AsyncAPIDocument {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        guard let root = try Yams.load(yaml: text) as? [String: Any] else {
            throw TestSystemError("\(path) is not a YAML mapping")
        }
        return AsyncAPIDocument(root: root)
    }

    public init(root: [String: Any]) { self.root = root }

    // MARK: References

    /// The value at a local JSON pointer (`#/components/schemas/Cart`).
    public func pointer(_ ref: String) -> Any? {
        guard ref.hasPrefix("#/") else { return nil }
        var node: Any? = root
        for raw in ref.dropFirst(2).split(separator: "/", omittingEmptySubsequences: false) {
            let part = raw.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
            if let m = node as? [String: Any] {
                node = m[part]
            } else if let a = node as? [Any], let i = Int(part), a.indices.contains(i) {
                node = a[i]
            } else {
                return nil
            }
        }
        return node
    }

    /// `value`, or what its `$ref` points to (followed until it is not a reference).
    public func resolved(_ value: Any?) -> Any? {
        var node = value
        var hops = 0
        while let m = node as? [String: Any], let ref = m["$ref"] as? String, hops < 32 {
            node = pointer(ref)
            hops += 1
        }
        return node
    }

    public func mapping(_ value: Any?) -> [String: Any]? { resolved(value) as? [String: Any] }

    // MARK: Channels and messages

    public var channels: [String: [String: Any]] {
        (root["channels"] as? [String: Any] ?? [:]).compactMapValues { mapping($0) }
    }

    /// Channels of real topics: all but those whose `address` is null (a reply address known
    /// only at run time, such as `reply_to`).
    public var topicChannels: [String: [String: Any]] { channels.filter { !($0.value["address"] is NSNull) } }

    public struct Message: @unchecked Sendable {
        /// Its id in the channel (`add_item`, `error`).
        public let id: String
        public let object: [String: Any]
        public init(id: String, object: [String: Any]) {
            self.id = id
            self.object = object
        }
        public var name: String { object["name"] as? String ?? id }
        public var payload: Any? { object["payload"] }
        public var headers: Any? { object["headers"] }
        public var contentType: String? { object["contentType"] as? String }
        public var examples: [[String: Any]] { (object["examples"] as? [Any] ?? []).compactMap { $0 as? [String: Any] } }
        public var key: Any? { ((object["bindings"] as? [String: Any])?["kafka"] as? [String: Any])?["key"] }
    }

    /// The messages of a channel (logical name), by their id in the channel.
    public func messages(ofChannel channel: String) -> [Message] {
        guard let c = channels[channel], let ms = c["messages"] as? [String: Any] else { return [] }
        return ms.keys.sorted().compactMap { id in mapping(ms[id]).map { Message(id: id, object: $0) } }
    }

    public var defaultContentType: String { root["defaultContentType"] as? String ?? "application/json" }

    // MARK: topics.yaml

    /// Where the document and topics.yaml disagree: the channel ids must be the logical topic
    /// names, each channel's `address` the topic's real name, `x-role` its role,
    /// `x-response-channel` (request topics) its response topic, `x-reply-channel` (upstream
    /// requests) its reply topic, and the Kafka binding's `partitions` its partitions. Channels
    /// with a null address (run-time reply addresses) are not topics and are left out.
    public func problems(against topics: Topics) -> [String] {
        var problems: [String] = []
        let channels = self.topicChannels
        for logical in Set(topics.entries.keys).subtracting(channels.keys).sorted() {
            problems.append("topics.yaml has \(logical), the document has no channel \(logical)")
        }
        for logical in Set(channels.keys).subtracting(topics.entries.keys).sorted() {
            problems.append("the document has channel \(logical), topics.yaml has no such topic")
        }
        for (logical, entry) in topics.entries.sorted(by: { $0.key < $1.key }) {
            guard let c = channels[logical] else { continue }
            let address = c["address"] as? String
            if address != entry.name {
                problems.append("channel \(logical): address \(address ?? "none"), but topics.yaml names the topic \(entry.name)")
            }
            let role = c["x-role"] as? String
            if role != entry.role.rawValue {
                problems.append("channel \(logical): x-role \(role ?? "none"), but topics.yaml says \(entry.role.rawValue)")
            }
            let response = c["x-response-channel"] as? String
            if response != entry.responseTopic {
                problems.append("channel \(logical): x-response-channel \(response ?? "none"), topics.yaml: \(entry.responseTopic ?? "none")")
            }
            let partitions = ((c["bindings"] as? [String: Any])?["kafka"] as? [String: Any])?["partitions"] as? Int
            if partitions != Int(entry.spec.partitions) {
                problems.append("channel \(logical): partitions \(partitions.map(String.init) ?? "none"), topics.yaml: \(entry.spec.partitions)")
            }
            if (c["messages"] as? [String: Any])?.isEmpty ?? true { problems.append("channel \(logical) has no messages") }
        }
        // Upstream request channels name their reply channel; the service's default is the pairing.
        let pairs = [("get_product_details", "product_details"), ("inventory_check", "inventory_check_results"),
                     ("inventory_deduction", "inventory_deduction_results")]
        for (request, reply) in pairs where channels[request]?["x-reply-channel"] as? String != reply {
            problems.append("channel \(request): x-reply-channel should be \(reply)")
        }
        return problems
    }

    // MARK: Validating records

    /// Why a record does not fit any message of its channel; empty when one fits.
    public func problems(record: KafkaRecord, onChannel channel: String) -> [String] {
        problems(key: record.key, value: record.value, headers: record.headers.map { ($0.key, $0.value) }, onChannel: channel)
    }

    public func problems(key: [UInt8]?, value: [UInt8]?, headers: [(String, [UInt8]?)], onChannel channel: String) -> [String] {
        let candidates = messages(ofChannel: channel)
        guard !candidates.isEmpty else { return ["the document has no messages for channel \(channel)"] }
        var all: [String] = []
        for m in candidates {
            let p = problems(key: key, value: value, headers: headers, message: m)
            if p.isEmpty { return [] }
            all += p.map { "[\(m.id)] \($0)" }
        }
        return all
    }

    public func problems(key: [UInt8]?, value: [UInt8]?, headers: [(String, [UInt8]?)], message m: Message) -> [String] {
        var problems: [String] = []
        let validator = SchemaValidator(document: self)
        if (m.contentType ?? defaultContentType) == "application/json" {
            guard let value else { return ["no value"] }
            do {
                problems += validator.validate(try JSON.parse(value), against: m.payload, at: "payload")
            } catch {
                return ["the value is not JSON: \(error)"]
            }
        }
        if let schema = m.headers {
            switch headerObject(headers, schema: schema) {
            case .success(let object): problems += validator.validate(object, against: schema, at: "headers")
            case .failure(let why): problems.append(why.description)
            }
        }
        if let schema = m.key {
            let k: JSON
            if let key {
                guard let s = String(validating: key, as: UTF8.self) else { return problems + ["key: not UTF-8"] }
                k = .string(s)
            } else {
                k = .null
            }
            problems += validator.validate(k, against: schema, at: "key")
        }
        return problems
    }

    /// Kafka headers as a JSON object: UTF-8 strings, except headers whose schema says
    /// `x-encoding: int32be` / `int64be` (Spring's binary numbers), which become integers. A
    /// repeated header counts with its last value; a header without value is null.
    public func headerObject(_ headers: [(String, [UInt8]?)], schema: Any?) -> Result<JSON, TestSystemError> {
        let properties = mapping(schema)?["properties"] as? [String: Any] ?? [:]
        var fields: [(String, JSON)] = []
        for (name, bytes) in headers {
            let value: JSON
            if let bytes {
                switch mapping(properties[name])?["x-encoding"] as? String {
                case "int32be":
                    guard bytes.count == 4 else { return .failure(TestSystemError("header \(name): \(bytes.count) bytes, expected 4")) }
                    value = .int(Int64(Int32(bitPattern: bytes.reduce(UInt32(0)) { $0 << 8 | UInt32($1) })))
                case "int64be":
                    guard bytes.count == 8 else { return .failure(TestSystemError("header \(name): \(bytes.count) bytes, expected 8")) }
                    value = .int(Int64(bitPattern: bytes.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }))
                default:
                    guard let s = String(validating: bytes, as: UTF8.self) else {
                        return .failure(TestSystemError("header \(name): not UTF-8"))
                    }
                    value = .string(s)
                }
            } else {
                value = .null
            }
            fields.removeAll { $0.0 == name }
            fields.append((name, value))
        }
        return .success(.object(fields))
    }
}

/// A YAML value (as Yams gives it) as JSON. Mappings are sorted by key.
public func jsonValue(ofYAML value: Any?) -> JSON {
    switch value {
    case nil, is NSNull: return .null
    case let b as Bool: return .bool(b)
    case let i as Int: return .int(Int64(i))
    case let d as Double: return .number(String(d))
    case let s as String: return .string(s)
    case let a as [Any]: return .array(a.map { jsonValue(ofYAML: $0) })
    case let m as [String: Any]: return .object(m.keys.sorted().map { ($0, jsonValue(ofYAML: m[$0])) })
    default: return .string("\(value!)")
    }
}

/// JSON Schema (draft-07), the subset docs/asyncapi.yaml uses: `type` (one or a list; `integer`
/// is a JSON integer within 64 bits, `number` any number), `enum`, `const`, `properties`,
/// `required`, `additionalProperties` (false or a schema), `items`, `minItems`/`maxItems`,
/// `minimum`/`maximum`, `minLength`/`maxLength` (code points), `pattern`, `oneOf`, `anyOf`,
/// `allOf`, `not`, and local `$ref`. Other keywords (`description`, `format`, `x-*`) are ignored;
/// an unknown assertion keyword is reported, so the document cannot silently rely on one.
public struct SchemaValidator: Sendable {
    public let document: AsyncAPIDocument

    public init(document: AsyncAPIDocument) { self.document = document }

    static let annotations: Set<String> = [
        "description", "title", "format", "examples", "example", "default", "$comment", "contentEncoding", "contentMediaType",
    ]
    static let assertions: Set<String> = [
        "type", "enum", "const", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
        "minimum", "maximum", "minLength", "maxLength", "pattern", "oneOf", "anyOf", "allOf", "not", "$ref",
    ]

    /// Every problem of `value` against `schema`, each with the path where it is.
    public func validate(_ value: JSON, against schema: Any?, at path: String = "$") -> [String] {
        guard let schema else { return [] }
        if let b = schema as? Bool { return b ? [] : ["\(path): no value is allowed here"] }
        guard let s = schema as? [String: Any] else { return ["\(path): the schema is not an object"] }
        if let ref = s["$ref"] as? String {
            guard let target = document.pointer(ref) else { return ["\(path): unresolved $ref \(ref)"] }
            return validate(value, against: target, at: path)
        }
        var problems: [String] = []
        for key in s.keys where !Self.assertions.contains(key) && !Self.annotations.contains(key) && !key.hasPrefix("x-") {
            problems.append("\(path): the validator does not know the schema keyword \(key)")
        }
        if let t = s["type"] {
            let types = (t as? [Any])?.compactMap { $0 as? String } ?? [(t as? String) ?? "?"]
            if !types.contains(where: { Self.has(value, type: $0) }) {
                return problems + ["\(path): \(Self.describe(value)) is not of type \(types.joined(separator: " or "))"]
            }
        }
        if let c = s["const"], !Self.equal(value, jsonValue(ofYAML: c)) {
            problems.append("\(path): \(Self.describe(value)) is not \(jsonValue(ofYAML: c).text)")
        }
        if let e = s["enum"] as? [Any], !e.contains(where: { Self.equal(value, jsonValue(ofYAML: $0)) }) {
            problems.append("\(path): \(Self.describe(value)) is not one of \(e.map { jsonValue(ofYAML: $0).text }.joined(separator: ", "))")
        }
        switch value {
        case .object(let fields):
            let properties = s["properties"] as? [String: Any] ?? [:]
            for name in (s["required"] as? [Any] ?? []).compactMap({ $0 as? String }) where !fields.contains(where: { $0.0 == name }) {
                problems.append("\(path): \(name) is required")
            }
            for (name, v) in fields {
                if let p = properties[name] {
                    problems += validate(v, against: p, at: "\(path).\(name)")
                } else if let extra = s["additionalProperties"] {
                    if let allowed = extra as? Bool {
                        if !allowed { problems.append("\(path): \(name) is not allowed here") }
                    } else {
                        problems += validate(v, against: extra, at: "\(path).\(name)")
                    }
                }
            }
        case .array(let items):
            if let min = s["minItems"] as? Int, items.count < min { problems.append("\(path): fewer than \(min) items") }
            if let max = s["maxItems"] as? Int, items.count > max { problems.append("\(path): more than \(max) items") }
            if let itemSchema = s["items"] {
                for (i, item) in items.enumerated() { problems += validate(item, against: itemSchema, at: "\(path)[\(i)]") }
            }
        case .int, .number:
            let number = Self.decimal(value)
            if let min = Self.bound(s["minimum"]), let n = number, n < min { problems.append("\(path): \(value.text) is below \(min)") }
            if let max = Self.bound(s["maximum"]), let n = number, n > max { problems.append("\(path): \(value.text) is above \(max)") }
        case .string(let text):
            let length = text.unicodeScalars.count
            if let min = s["minLength"] as? Int, length < min { problems.append("\(path): shorter than \(min)") }
            if let max = s["maxLength"] as? Int, length > max { problems.append("\(path): longer than \(max)") }
            if let pattern = s["pattern"] as? String {
                if let regex = try? NSRegularExpression(pattern: pattern) {
                    if regex.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) == nil {
                        problems.append("\(path): \(Self.describe(value)) does not match \(pattern)")
                    }
                } else {
                    problems.append("\(path): invalid pattern \(pattern)")
                }
            }
        case .null, .bool:
            break
        }
        for sub in s["allOf"] as? [Any] ?? [] { problems += validate(value, against: sub, at: path) }
        if let any = s["anyOf"] as? [Any] {
            let results = any.map { validate(value, against: $0, at: path) }
            if !results.contains(where: \.isEmpty) {
                problems.append("\(path): matches none of anyOf: " + results.map { $0.joined(separator: "; ") }.joined(separator: " | "))
            }
        }
        if let one = s["oneOf"] as? [Any] {
            let results = one.map { validate(value, against: $0, at: path) }
            let fits = results.filter(\.isEmpty).count
            if fits == 0 {
                problems.append("\(path): matches none of oneOf: " + results.map { $0.joined(separator: "; ") }.joined(separator: " | "))
            } else if fits > 1 {
                problems.append("\(path): matches \(fits) schemas of oneOf, expected exactly one")
            }
        }
        if let not = s["not"], validate(value, against: not, at: path).isEmpty {
            problems.append("\(path): matches a schema it must not match")
        }
        return problems
    }

    static func has(_ value: JSON, type: String) -> Bool {
        switch (type, value) {
        case ("null", .null), ("boolean", .bool), ("integer", .int), ("string", .string), ("array", .array), ("object", .object): true
        case ("number", .int), ("number", .number): true
        default: false
        }
    }

    static func decimal(_ value: JSON) -> Decimal? {
        switch value {
        case .int(let i): Decimal(i)
        case .number(let s): Decimal(string: s)
        default: nil
        }
    }

    static func bound(_ raw: Any?) -> Decimal? {
        switch raw {
        case let i as Int: Decimal(i)
        case let d as Double: Decimal(string: String(d))
        default: nil
        }
    }

    /// JSON equality for const/enum: numbers by value, objects regardless of key order.
    static func equal(_ a: JSON, _ b: JSON) -> Bool {
        switch (a, b) {
        case (.int, .number), (.number, .int), (.number, .number): return decimal(a) == decimal(b)
        case let (.object(x), .object(y)):
            return x.count == y.count && x.allSatisfy { f in y.contains { $0.0 == f.0 && equal($0.1, f.1) } }
        case let (.array(x), .array(y)): return x.count == y.count && zip(x, y).allSatisfy { equal($0, $1) }
        default: return a == b
        }
    }

    static func describe(_ value: JSON) -> String {
        let t = value.text
        return t.count > 120 ? String(t.prefix(120)) + "…" : t
    }
}
