import Foundation
import Kafka
import Testing
import TestSupport

@testable import OrderCore

/// docs/asyncapi.yaml against the code, without a broker: its channels against topics.yaml, its
/// error codes and actions against the contract's enums, its examples against its schemas and the
/// service's decoders, and the service's encoders against its schemas. (The end-to-end tier
/// checks every record the running service produces: AsyncAPIConformanceTests.)
@Suite("AsyncAPI document (docs/asyncapi.yaml)", .timeLimit(.minutes(1)))
struct AsyncAPIDocumentTests {
    let doc: AsyncAPIDocument
    init() throws { doc = try AsyncAPIDocument.load() }

    var validator: SchemaValidator { SchemaValidator(document: doc) }

    func schema(_ name: String) -> Any? { doc.pointer("#/components/schemas/\(name)") }
    func message(_ name: String) throws -> AsyncAPIDocument.Message {
        AsyncAPIDocument.Message(id: name, object: try #require(doc.mapping(doc.pointer("#/components/messages/\(name)")), "no message \(name)"))
    }

    /// Every `$ref` anywhere in the document, with where it is.
    func references(in value: Any, at path: String = "#") -> [(path: String, ref: String)] {
        if let m = value as? [String: Any] {
            var found: [(String, String)] = []
            if let ref = m["$ref"] as? String { found.append((path, ref)) }
            for (k, v) in m { found += references(in: v, at: "\(path)/\(k)") }
            return found
        }
        if let a = value as? [Any] { return a.enumerated().flatMap { references(in: $1, at: "\(path)/\($0)") } }
        return []
    }

    /// The `action` constant of a message's payload schema.
    func actionConstant(_ m: AsyncAPIDocument.Message) -> String? {
        (doc.mapping(doc.mapping(m.payload)?["properties"].flatMap { ($0 as? [String: Any])?["action"] }))?["const"] as? String
    }

    @Test func isAnAsyncAPI3DocumentWhoseReferencesAllResolve() throws {
        #expect(doc.root["asyncapi"] as? String == "3.0.0")
        #expect((doc.root["info"] as? [String: Any])?["version"] as? String == "1.0.0")
        let refs = references(in: doc.root)
        #expect(refs.count > 100)
        for (path, ref) in refs {
            #expect(ref.hasPrefix("#/") && doc.pointer(ref) != nil, "\(path): $ref \(ref) does not resolve")
        }
    }

    @Test("channels are exactly topics.yaml's topics: logical name, real name, role, response topic, partitions")
    func channelsMatchTopicsYAML() throws {
        let topics = try Topics.parse(yaml: try String(contentsOfFile: TestSystem.repoRoot + "/topics.yaml", encoding: .utf8))
        #expect(doc.problems(against: topics) == [])
        #expect(Set(doc.topicChannels.keys) == Set(topics.entries.keys))
        #expect(Set(doc.channels.keys).subtracting(doc.topicChannels.keys) == ["reply_to"])
    }

    @Test("renaming, adding or dropping a topic in topics.yaml without the document is caught")
    func topicChangesAreCaught() throws {
        let yaml = try String(contentsOfFile: TestSystem.repoRoot + "/topics.yaml", encoding: .utf8)
        let renamed = try Topics.parse(yaml: yaml.replacingOccurrences(of: "    name: cart_responses\n", with: "    name: shop.cart_replies\n"))
        let problems = doc.problems(against: renamed)
        #expect(problems.count == 1)
        #expect(problems.first?.contains("channel cart_responses: address cart_responses, but topics.yaml names the topic shop.cart_replies") == true)

        let repartitioned = try Topics.parse(yaml: yaml.replacingOccurrences(of: "  order_notification:\n    name: order_notification\n    role: event\n    partitions: 4\n", with: "  order_notification:\n    name: order_notification\n    role: event\n    partitions: 12\n"))
        #expect(doc.problems(against: repartitioned).contains { $0.contains("order_notification: partitions 4") })

        let withoutMetrics = try Topics.parse(yaml: try #require(yaml.components(separatedBy: "  # Not part of the wire contract").first))
        #expect(doc.problems(against: withoutMetrics) == ["the document has channel order_service_metrics, topics.yaml has no such topic"])

        let extra = try Topics.parse(yaml: yaml + "  audit_log:\n    name: audit_log\n    role: event\n    partitions: 1\n")
        #expect(doc.problems(against: extra) == ["topics.yaml has audit_log, the document has no channel audit_log"])
    }

    @Test("request channels: one request message per action of RequestTopicKind, a reply per action on every response channel")
    func actionsAreComplete() throws {
        let allActions = Set(RequestTopicKind.allCases.flatMap(\.actions))
        for kind in RequestTopicKind.allCases {
            let channel = "\(kind.rawValue)_requests"
            let actions = doc.messages(ofChannel: channel).compactMap(actionConstant)
            #expect(Set(actions) == kind.actions, "\(channel): request messages for \(actions.sorted())")
            #expect(actions.count == kind.actions.count)
        }
        for channel in ["cart_responses", "order_responses", "admin_responses", "reply_to"] {
            let messages = doc.messages(ofChannel: channel)
            let okActions = messages.filter { $0.id != "error" }.compactMap(actionConstant)
            #expect(Set(okActions) == allActions, "\(channel)")
            #expect(messages.contains { $0.id == "error" }, "\(channel) has no error reply")
        }
    }

    @Test("request/reply operations: reply address from reply-to, the default response channel, correlation-id")
    func requestReplyOperations() throws {
        let topics = try Topics.parse(yaml: try String(contentsOfFile: TestSystem.repoRoot + "/topics.yaml", encoding: .utf8))
        let operations = try #require(doc.root["operations"] as? [String: Any]).compactMapValues { $0 as? [String: Any] }
        for kind in RequestTopicKind.allCases {
            let channel = "\(kind.rawValue)_requests"
            let op = try #require(operations.values.first { ($0["channel"] as? [String: Any])?["$ref"] as? String == "#/channels/\(channel)" })
            #expect(op["action"] as? String == "receive")
            let reply = try #require(op["reply"] as? [String: Any])
            #expect((reply["address"] as? [String: Any])?["location"] as? String == "$message.header#/reply-to")
            // AsyncAPI 3: with a reply address, the reply channel's address is null.
            #expect((reply["channel"] as? [String: Any])?["$ref"] as? String == "#/channels/reply_to")
            #expect(doc.channels["reply_to"]?["address"] is NSNull)
            #expect(reply["x-default-reply-channel"] as? String == topics.entries[channel]?.responseTopic)
            // Operation messages are messages of its channel, reply messages of the reply channel.
            for ref in (op["messages"] as? [Any] ?? []).compactMap({ ($0 as? [String: Any])?["$ref"] as? String }) {
                #expect(ref.hasPrefix("#/channels/\(channel)/messages/"), "\(ref)")
            }
            let replyRefs = (reply["messages"] as? [Any] ?? []).compactMap { ($0 as? [String: Any])?["$ref"] as? String }
            #expect(replyRefs.allSatisfy { $0.hasPrefix("#/channels/reply_to/messages/") })
            let replyActions = Set(replyRefs.compactMap { doc.mapping(doc.pointer($0)).map { AsyncAPIDocument.Message(id: "", object: $0) } }.compactMap(actionConstant))
            #expect(replyActions == kind.actions)
            #expect(replyRefs.contains("#/channels/reply_to/messages/error"))
            for m in doc.messages(ofChannel: channel) + doc.messages(ofChannel: "\(kind.rawValue)_responses") {
                #expect((m.object["correlationId"] as? [String: Any])?["location"] as? String == "$message.header#/correlation-id", "\(m.id)")
            }
        }
        // Every operation's messages belong to its channel, its reply's to the reply channel; a
        // reply without a run-time address goes to a channel with a real address.
        for (name, op) in operations {
            let channel = try #require((op["channel"] as? [String: Any])?["$ref"] as? String, "\(name)")
            for ref in (op["messages"] as? [Any] ?? []).compactMap({ ($0 as? [String: Any])?["$ref"] as? String }) {
                #expect(ref.hasPrefix(channel + "/messages/") && doc.pointer(ref) != nil, "\(name): \(ref)")
            }
            guard let reply = op["reply"] as? [String: Any] else { continue }
            let replyChannel = try #require((reply["channel"] as? [String: Any])?["$ref"] as? String, "\(name)")
            for ref in (reply["messages"] as? [Any] ?? []).compactMap({ ($0 as? [String: Any])?["$ref"] as? String }) {
                #expect(ref.hasPrefix(replyChannel + "/messages/") && doc.pointer(ref) != nil, "\(name): \(ref)")
            }
            let replyAddress = doc.mapping(doc.pointer(replyChannel))?["address"]
            #expect((reply["address"] != nil) == (replyAddress is NSNull), "\(name): reply address and channel address")
        }
    }

    @Test("the error reply: every ErrorCode and nothing else, product_ids and items where the contract puts them, an example per code")
    func errorCodes() throws {
        let variants = try #require(doc.mapping(schema("Error"))?["oneOf"] as? [Any]).compactMap { doc.mapping($0) }
        var codes: [String] = []
        var required: [String: Set<String>] = [:]
        for v in variants {
            let code = try #require(doc.mapping((v["properties"] as? [String: Any])?["code"]))
            let these = (code["const"].map { [$0] } ?? code["enum"] as? [Any] ?? []).compactMap { $0 as? String }
            codes += these
            for c in these { required[c] = Set((v["required"] as? [Any] ?? []).compactMap { $0 as? String }) }
        }
        #expect(codes.count == Set(codes).count, "a code in two variants")
        #expect(Set(codes) == Set(ErrorCode.allCases.map(\.rawValue)))
        #expect(required["product_not_found"] == ["code", "message", "product_ids"])
        #expect(required["insufficient_stock"] == ["code", "message", "items"])
        #expect(required["cart_empty"] == ["code", "message"])

        let examples = try message("ErrorReply").examples
        let exampleCodes = examples.compactMap { (($0["payload"] as? [String: Any])?["error"] as? [String: Any])?["code"] as? String }
        #expect(Set(exampleCodes) == Set(ErrorCode.allCases.map(\.rawValue)), "an example for every error code")

        // The service's own error replies fit, with the extra fields its stages add.
        let errors: [ServiceError] = ErrorCode.allCases.map { code in
            switch code {
            case .productNotFound: ServiceError(code, "unknown product id(s): 3, 4", details: [("product_ids", [.int(3), .int(4)])])
            case .insufficientStock:
                ServiceError(code, "not enough stock", details: [("items", [StockLine(productId: 3, requested: 5, available: 1).json])])
            default: ServiceError(code, "why")
            }
        }
        for e in errors {
            let reply = Reply.error(requestId: nil, action: nil, e)
            #expect(validator.validate(reply, against: schema("ErrorReply")) == [], "\(reply.text)")
        }
        // Without its extra field a product_not_found does not fit.
        #expect(!validator.validate(Reply.error(requestId: "r", action: "add_item", ServiceError(.productNotFound, "x")), against: schema("ErrorReply")).isEmpty)
        #expect(!validator.validate(Reply.error(requestId: "r", action: "add_item", ServiceError(.cartFull, "x", details: [("items", [])])), against: schema("ErrorReply")).isEmpty)
    }

    @Test("every example of every message is valid against the message's payload and header schemas")
    func examplesAreValid() throws {
        var count = 0
        for (channel, _) in doc.channels {
            for m in doc.messages(ofChannel: channel) {
                #expect(!m.examples.isEmpty, "\(channel)/\(m.id) has no example")
                for example in m.examples {
                    let name = "\(channel)/\(m.id) example '\(example["name"] as? String ?? "?")'"
                    if (m.contentType ?? doc.defaultContentType) == "application/json" {
                        #expect(validator.validate(jsonValue(ofYAML: example["payload"]), against: m.payload, at: "payload") == [], "\(name)")
                    }
                    if let headers = example["headers"] {
                        #expect(validator.validate(jsonValue(ofYAML: headers), against: m.headers, at: "headers") == [], "\(name)")
                    }
                    count += 1
                }
            }
        }
        #expect(count > 40)
    }

    @Test("the validator rejects what the decoder rejects: wrong types, ranges, missing fields")
    func schemasRejectWhatTheDecoderRejects() throws {
        let bad: [(String, String)] = [
            ("AddItemRequest", #"{"action":"add_item","user_id":1,"product_id":2,"quantity":0}"#),
            ("AddItemRequest", #"{"action":"add_item","user_id":1,"product_id":2,"quantity":10001}"#),
            ("AddItemRequest", #"{"action":"add_item","user_id":1,"product_id":2.0,"quantity":1}"#),
            ("AddItemRequest", #"{"action":"add_item","user_id":"1","product_id":2,"quantity":1}"#),
            ("AddItemRequest", #"{"action":"add_item","user_id":1,"quantity":1}"#),
            ("GetCartRequest", #"{"action":"get_cart","user_id":0}"#),
            ("GetCartRequest", #"{"request_id":7,"action":"get_cart","user_id":1}"#),
            ("GetCartRequest", "{\"request_id\":\"\(String(repeating: "x", count: 129))\",\"action\":\"get_cart\",\"user_id\":1}"),
            ("ListOrdersRequest", #"{"action":"list_orders","user_id":1,"limit":1001}"#),
            ("ListOrdersRequest", #"{"action":"list_orders","user_id":1,"before_order_id":0}"#),
            ("ListCartsRequest", #"{"action":"list_carts","after_cart_id":-1}"#),
            ("ListCartsRequest", #"{"action":"list_carts","limit":0}"#),
        ]
        for (name, text) in bad {
            let json = try JSON.parse(text)
            #expect(!validator.validate(json, against: schema(name)).isEmpty, "\(name) accepts \(text)")
            let kind: RequestTopicKind = name == "ListCartsRequest" ? .admin : name == "ListOrdersRequest" ? .order : .cart
            guard case .rejected = DecodeStage(topic: kind).decode(Array(text.utf8)) else {
                Issue.record("the decoder accepts \(text)")
                continue
            }
        }
    }

    @Test("every request example decodes with DecodeStage on its topic to its action")
    func requestExamplesDecode() throws {
        for kind in RequestTopicKind.allCases {
            for m in doc.messages(ofChannel: "\(kind.rawValue)_requests") {
                for example in m.examples {
                    let payload = jsonValue(ofYAML: example["payload"])
                    let outcome = DecodeStage(topic: kind).decode(payload.bytes)
                    guard case .request(let request) = outcome else {
                        Issue.record("\(m.id) example \(payload.text) decodes to \(outcome)")
                        continue
                    }
                    #expect(request.command.action == actionConstant(m))
                    #expect(request.requestId == payload["request_id"]?.string)
                    #expect(request.command.userId == payload["user_id"]?.int)
                }
            }
        }
    }

    @Test("every upstream answer example is accepted by the service's readers")
    func upstreamExamplesDecode() throws {
        for example in try message("ProductDetailsReply").examples {
            let reply = jsonValue(ofYAML: example["payload"])
            let lookup = try ProductLookup(reply: reply, asked: [7, 9])
            #expect(lookup.unusable.isEmpty && !lookup.products.isEmpty, "\(reply.text)")
        }
        for example in try message("InventoryCheckReply").examples {
            let reply = jsonValue(ofYAML: example["payload"])
            let lines = try KafkaInventoryChecker.stock(reply: reply, asked: [(productId: 7, quantity: 2)])
            #expect(lines.first?.available == reply["items"]?.array?.first?["available"]?.int.map(Int.init))
        }
        for example in try message("InventoryDeductionResult").examples {
            // The rule RequestPipeline applies before a result moves an order.
            let result = jsonValue(ofYAML: example["payload"])
            let orderId = try #require(result["order_id"]?.int)
            #expect(orderId >= 1 && ["deducted", "insufficient"].contains(result["status"]?.string))
            #expect(result["request_id"].map { $0.string == "deduct-\(orderId)" } ?? true)
        }
    }

    @Test("the service's encoders (carts, orders, deduction requests, notifications) fit the schemas")
    func encodersFit() throws {
        let item = try CartItem(cartItemId: 5, productId: 7, productName: "Mug", unitPrice: try #require(Money("19.99")), quantity: 2)
        let cart = try Cart(cartId: 1, userId: 42, createdAt: "2026-11-25T10:00:00.123Z", items: [item])
        for c in [cart, Cart.empty(userId: 42)] {
            for action in RequestTopicKind.cart.actions {
                let reply = Reply.ok(requestId: "r", action: action, body: [("cart", c.json)])
                #expect(validator.validate(reply, against: try message("\(action.camelCased)Reply").payload) == [], "\(reply.text)")
            }
        }
        let line = try OrderItem(orderItemId: 11, productId: 7, productName: "Mug", unitPrice: try #require(Money("19.99")), quantity: 2)
        let order = Order(orderId: 9, userId: 42, status: .pending, totalPrice: line.lineTotal, createdAt: "2026-11-25T10:00:00.123Z", items: [line])
        #expect(validator.validate(Reply.ok(requestId: nil, action: "create_order", body: [("order", order.json)]), against: schema("CreateOrderReply")) == [])
        #expect(validator.validate(Reply.ok(requestId: nil, action: "list_orders", body: [("orders", [order.json]), ("next_before_order_id", .null)]), against: schema("ListOrdersReply")) == [])
        #expect(validator.validate(Reply.ok(requestId: nil, action: "list_carts", body: [("carts", [cart.json]), ("next_after_cart_id", .int(1))]), against: schema("ListCartsReply")) == [])

        let topics = try Topics.parse(yaml: try String(contentsOfFile: TestSystem.repoRoot + "/topics.yaml", encoding: .utf8))
        let deduction = OutgoingMessages.deductionRequest(order, topics: topics)
        #expect(doc.problems(key: deduction.key, value: deduction.value, headers: deduction.headers.map { ($0.key, $0.value) }, onChannel: "inventory_deduction") == [])
        for status in [OrderStatus.pending, .confirmed, .rejected] {
            let n = OutgoingMessages.notification(order: 9, user: 42, status: status, total: order.totalPrice, at: order.createdAt, topics: topics).record
            #expect(doc.problems(key: n.key, value: n.value, headers: n.headers.map { ($0.key, $0.value) }, onChannel: "order_notification") == [])
        }
    }

    @Test("dead letters: the headers ReplyRouting writes fit, binary ones included")
    func deadLetterHeadersFit() throws {
        let topics = try Topics.parse(yaml: try String(contentsOfFile: TestSystem.repoRoot + "/topics.yaml", encoding: .utf8))
        let routing = ReplyRouting(topics: topics, groupId: "order-service")
        let record = KafkaRecord(topic: "cart_requests", partition: 3, offset: 1207, key: Array("42".utf8), value: Array("not json".utf8), headers: [KafkaHeader("x-custom", "kept")])
        for kind in [ReplyRouting.DeadLetterKind.invalidRequest, .internalError, .crashLoop, .replyRefused, .invalidDeductionResult] {
            let dl = routing.deadLetter(record, error: "the value is not valid JSON", kind: kind)
            #expect(doc.problems(key: dl.key, value: dl.value, headers: dl.headers.map { ($0.key, $0.value) }, onChannel: "order_service_dlq") == [])
        }
        // A 3-byte partition header is caught.
        var headers = routing.deadLetter(record, error: "x").headers.map { ($0.key, $0.value) }
        headers.append(("kafka_dlt-original-partition", [0, 0, 3]))
        #expect(!doc.problems(key: nil, value: [], headers: headers, onChannel: "order_service_dlq").isEmpty)
    }
}

extension String {
    /// add_item → AddItem
    fileprivate var camelCased: String { split(separator: "_").map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined() }
}
