import Foundation
import Kafka
import OrderCore
import Synchronization
import Testing
import TestSupport

/// What the fake upstream answers, per product id. A request for several products combines the
/// `entries` of each; a product scripted with `answers` decides the whole answer of any request
/// that asks for it.
final class UpstreamScripts: Sendable {
    enum Script: Sendable {
        /// Raw JSON text fragments (any bytes): this product's entries in `products` / `items`.
        case entries([[UInt8]])
        /// The whole answer (zero or more records).
        case answers(@Sendable (FakeUpstream.Request) -> [FakeUpstream.Answer])
    }

    private let products = Mutex<[Int64: Script]>([:])
    private let stock = Mutex<[Int64: Script]>([:])

    func product(_ id: Int64, _ script: Script) { products.withLock { $0[id] = script } }
    func stock(_ id: Int64, _ script: Script) { stock.withLock { $0[id] = script } }

    /// An unscripted product is not mentioned by the Product Service and has plenty of stock.
    func answer(_ request: FakeUpstream.Request) -> [FakeUpstream.Answer] {
        let table = request.service == .product ? products.withLock { $0 } : stock.withLock { $0 }
        var fragments: [[UInt8]] = []
        for id in request.productIds {
            switch table[id] {
            case .answers(let answers)?: return answers(request)
            case .entries(let entries)?: fragments += entries
            case nil:
                if request.service == .inventory {
                    fragments.append(Array(#"{"product_id":\#(id),"requested":\#(request.quantity(of: id) ?? 0),"available":1000000}"#.utf8))
                }
            }
        }
        let field = request.service == .product ? "products" : "items"
        var value = Array(#"{"request_id":\#(request.requestIdJSON),"\#(field)":["#.utf8)
        for (n, fragment) in fragments.enumerated() {
            if n > 0 { value.append(UInt8(ascii: ",")) }
            value += fragment
        }
        value += Array("]}".utf8)
        return [FakeUpstream.Answer(value: value)]
    }
}

/// A product entry as raw JSON text; `name`/`price` are JSON text (nil: the field is left out).
func productEntry(_ id: Int64, name: String? = #""Fuzz""#, price: String? = #""1.00""#, extra: String = "") -> [UInt8] {
    var fields = [#""product_id":\#(id)"#]
    if let name { fields.append(#""name":\#(name)"#) }
    if let price { fields.append(#""price":\#(price)"#) }
    if !extra.isEmpty { fields.append(extra) }
    return Array("{\(fields.joined(separator: ","))}".utf8)
}

/// A script for any product: the whole answer (zero or more records) from the request.
func answers(_ make: @escaping @Sendable (FakeUpstream.Request) -> [FakeUpstream.Answer]) -> (Int64) -> UpstreamScripts.Script {
    { _ in .answers(make) }
}

/// A whole answer with this body text (given the `request_id` as JSON text).
func wholeAnswer(_ text: @escaping @Sendable (String) -> String, correlation: FakeUpstream.Answer.Correlation = .request)
    -> (Int64) -> UpstreamScripts.Script
{
    answers { r in [FakeUpstream.Answer(text(r.requestIdJSON), correlation: correlation)] }
}

/// These bytes as the whole answer.
func rawAnswer(_ value: [UInt8]?) -> (Int64) -> UpstreamScripts.Script { answers { _ in [FakeUpstream.Answer(value: value)] } }

/// What a client request must get.
enum Expected: CustomStringConvertible {
    /// status ok; for add_item the product's line has this unit price (and name).
    case ok(price: String? = nil, name: String? = nil)
    case error(String)
    /// `upstream_timeout` before the upstream timeout passed (the answer was unusable).
    case timeoutAtOnce
    /// `upstream_timeout` after the upstream timeout (nothing usable answered).
    case timeoutAfterWait

    var description: String {
        switch self {
        case .ok(let p, _): "ok \(p ?? "")"
        case .error(let c): c
        case .timeoutAtOnce: "upstream_timeout at once"
        case .timeoutAfterWait: "upstream_timeout after the timeout"
        }
    }
}

let contractErrorCodes: Set<String> = [
    "invalid_request", "unknown_action", "invalid_reply_to", "forbidden", "product_not_found", "item_not_found", "cart_empty",
    "cart_full", "insufficient_stock", "order_not_found", "upstream_timeout",
]

/// The client side of the fuzz: sends requests one at a time, checks each reply against the
/// contract and remembers the correlation ids, users and late answers.
final class FuzzClient {
    let system: TestSystem
    let upstreamTimeout: Duration
    private(set) var correlations: [String] = []
    private(set) var users: [Int64] = []
    private var counter = 0

    init(_ system: TestSystem, upstreamTimeout: Duration) {
        self.system = system
        self.upstreamTimeout = upstreamTimeout
    }

    func newUser() -> Int64 {
        let u = TestCatalog.uniqueUserId()
        users.append(u)
        return u
    }

    /// Sends one request keyed by its user; returns the reply (checked to be a contract reply) and how long it took.
    func send(_ logical: String, _ fields: [(String, JSON)], _ label: String, sourceLocation: SourceLocation = #_sourceLocation)
        async throws -> (reply: JSON, elapsed: Duration)
    {
        let (requestId, body) = makeBody(fields)
        let started = ContinuousClock.now
        let record = try await system.requestRecord(
            logical, value: body.bytes, key: body["user_id"]?.int.map { String($0) }, timeout: .seconds(40))
        let elapsed = ContinuousClock.now - started
        return (try validate(record, requestId: requestId, body: body, label, sourceLocation: sourceLocation), elapsed)
    }

    /// Sends all requests at once, then waits for every reply (`elapsed` is the whole batch's time).
    func sendConcurrently(_ requests: [(logical: String, fields: [(String, JSON)], label: String)], sourceLocation: SourceLocation = #_sourceLocation)
        async throws -> [(reply: JSON, elapsed: Duration)]
    {
        let prepared = requests.map { r in (r, makeBody(r.fields), UUID().uuidString) }
        let started = ContinuousClock.now
        let system = self.system
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (r, (_, body), correlation) in prepared {
                group.addTask {
                    try await system.send(
                        r.logical, value: body.bytes, key: body["user_id"]?.int.map { String($0) },
                        headers: [KafkaHeader("correlation-id", correlation)])
                }
            }
            try await group.waitForAll()
        }
        let wanted = Set(prepared.map(\.2))
        var found: [String: KafkaRecord] = [:]
        let deadline = ContinuousClock.now + .seconds(60)
        while found.count < wanted.count, ContinuousClock.now < deadline {
            for r in system.records(on: "cart_responses") + system.records(on: "order_responses") {
                if let c = r.header("correlation-id")?.stringValue, wanted.contains(c), found[c] == nil { found[c] = r }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        let elapsed = ContinuousClock.now - started
        var results: [(reply: JSON, elapsed: Duration)] = []
        for (r, (requestId, body), correlation) in prepared {
            let record = try #require(found[correlation], "\(r.label): no reply within 60 s", sourceLocation: sourceLocation)
            results.append((try validate(record, requestId: requestId, body: body, r.label, sourceLocation: sourceLocation), elapsed))
        }
        return results
    }

    private func makeBody(_ fields: [(String, JSON)]) -> (String, JSON) {
        counter += 1
        let requestId = "fuzz-\(counter)"
        return (requestId, JSON.object([("request_id", .string(requestId))] + fields))
    }

    /// A contract reply to this request: request_id and action echoed, status ok or a contract error code (never internal_error).
    private func validate(_ record: KafkaRecord, requestId: String, body: JSON, _ label: String, sourceLocation: SourceLocation) throws -> JSON {
        let action = body["action"]?.string ?? ""
        if let c = record.header("correlation-id")?.stringValue { correlations.append(c) }
        let value = try #require(record.value, "\(label): a reply without a value", sourceLocation: sourceLocation)
        let reply = try JSON.parse(value)
        #expect(reply["request_id"]?.string == requestId, "\(label): \(reply.text.prefix(300))", sourceLocation: sourceLocation)
        #expect(reply["action"]?.string == action, "\(label): \(reply.text.prefix(300))", sourceLocation: sourceLocation)
        switch reply["status"]?.string {
        case "ok": break
        case "error":
            let code = reply["error"]?["code"]?.string ?? "<none>"
            #expect(contractErrorCodes.contains(code), "\(label): error code \(code) is not a contract code: \(reply.text.prefix(300))", sourceLocation: sourceLocation)
            #expect(reply["error"]?["message"]?.string?.isEmpty == false, "\(label)", sourceLocation: sourceLocation)
        default: Issue.record("\(label): status is neither ok nor error: \(reply.text.prefix(300))", sourceLocation: sourceLocation)
        }
        return reply
    }

    func addItem(_ user: Int64, _ product: Int64, _ quantity: Int64, _ label: String, sourceLocation: SourceLocation = #_sourceLocation)
        async throws -> (reply: JSON, elapsed: Duration)
    {
        try await send(
            "cart_requests", [("action", "add_item"), ("user_id", .int(user)), ("product_id", .int(product)), ("quantity", .int(quantity))],
            label, sourceLocation: sourceLocation)
    }

    func getCart(_ user: Int64, _ label: String) async throws -> JSON {
        try await send("cart_requests", [("action", "get_cart"), ("user_id", .int(user))], label).reply
    }

    func createOrder(_ user: Int64, _ label: String, sourceLocation: SourceLocation = #_sourceLocation) async throws -> (reply: JSON, elapsed: Duration) {
        try await send("order_requests", [("action", "create_order"), ("user_id", .int(user))], label, sourceLocation: sourceLocation)
    }

    func listOrders(_ user: Int64, _ label: String) async throws -> JSON {
        try await send("order_requests", [("action", "list_orders"), ("user_id", .int(user))], label).reply
    }

    /// Checks a reply against what the case expects.
    func check(
        _ result: (reply: JSON, elapsed: Duration), _ expected: Expected, product: Int64? = nil, _ label: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let (reply, elapsed) = result
        let text = String(reply.text.prefix(400))
        let code = reply["error"]?["code"]?.string
        switch expected {
        case .ok(let price, let name):
            #expect(reply["status"]?.string == "ok", "\(label): expected ok, got \(text)", sourceLocation: sourceLocation)
            if let product, price != nil || name != nil {
                let line = reply["cart"]?["items"]?.array?.first { $0["product_id"]?.int == product }
                if let price { #expect(line?["unit_price"]?.string == price, "\(label): \(text)", sourceLocation: sourceLocation) }
                if let name { #expect(line?["product_name"]?.string == name, "\(label): name differs", sourceLocation: sourceLocation) }
            }
        case .error(let wanted):
            #expect(code == wanted, "\(label): expected \(wanted), got \(text)", sourceLocation: sourceLocation)
            if wanted == "product_not_found", let product {
                #expect(reply["error"]?["product_ids"]?.array?.compactMap(\.int) == [product], "\(label): \(text)", sourceLocation: sourceLocation)
            }
        case .timeoutAtOnce:
            #expect(code == "upstream_timeout", "\(label): expected upstream_timeout, got \(text)", sourceLocation: sourceLocation)
            #expect(elapsed < upstreamTimeout, "\(label): took \(elapsed), the unusable answer should fail at once", sourceLocation: sourceLocation)
        case .timeoutAfterWait:
            #expect(code == "upstream_timeout", "\(label): expected upstream_timeout, got \(text)", sourceLocation: sourceLocation)
            #expect(elapsed >= upstreamTimeout, "\(label): took only \(elapsed)", sourceLocation: sourceLocation)
        }
    }
}

/// Amounts of a cart or order: each parses as a contract amount (two decimals, ≤ Money.max),
/// line_total = unit_price × quantity and total_price = the sum of the lines.
func expectConsistentAmounts(_ object: JSON?, _ label: String, sourceLocation: SourceLocation = #_sourceLocation) {
    func amount(_ value: JSON?, _ what: String) -> Money? {
        guard let s = value?.string, let dot = s.firstIndex(of: "."), s[s.index(after: dot)...].count == 2, let m = Money(s) else {
            Issue.record("\(label): \(what) is not a contract amount: \(value?.text ?? "missing")", sourceLocation: sourceLocation)
            return nil
        }
        return m
    }
    guard let object, let items = object["items"]?.array else {
        Issue.record("\(label): no items in \(object?.text.prefix(300) ?? "nil")", sourceLocation: sourceLocation)
        return
    }
    var lines: [Money] = []
    for item in items {
        let unit = amount(item["unit_price"], "unit_price")
        let line = amount(item["line_total"], "line_total")
        guard let quantity = item["quantity"]?.int, (1...10_000).contains(quantity) else {
            Issue.record("\(label): quantity \(item["quantity"]?.text ?? "missing")", sourceLocation: sourceLocation)
            continue
        }
        if let unit, let line {
            #expect(unit.times(Int(quantity)) == line, "\(label): \(unit) × \(quantity) ≠ \(line)", sourceLocation: sourceLocation)
            lines.append(line)
        }
    }
    if let total = amount(object["total_price"], "total_price"), lines.count == items.count {
        #expect(Money.sum(lines) == total, "\(label): total \(total) is not the sum of \(lines)", sourceLocation: sourceLocation)
    }
}

extension EndToEndTests {
    @Test("upstream fuzz: hostile Product and Inventory answers get contract replies, never internal_error; the service stays up and consistent")
    func upstreamFuzz() async throws {
        // Each ok case needs the fake upstream in this (busy) test process to answer within it, and
        // each "at once" case its whole round trip under it: 5 s, the service's default.
        let timeoutMs = 5_000
        let system = try await TestSystem.start(
            "upfuzz", product: false, inventory: false, serviceEnvironment: ["ORDER_SERVICE_UPSTREAM_TIMEOUT_MS": String(timeoutMs)])
        let scripts = UpstreamScripts()
        let fake: FakeUpstream
        do { fake = try FakeUpstream(system) { scripts.answer($0) } } catch {
            await system.stop()
            throw error
        }
        do {
            try await runUpstreamFuzz(system, scripts, fake, upstreamTimeout: .milliseconds(timeoutMs))
        } catch {
            await fake.stop()
            await system.stop()
            throw error
        }
        await fake.stop()
        await system.stop()
    }

    private func runUpstreamFuzz(_ system: TestSystem, _ scripts: UpstreamScripts, _ fake: FakeUpstream, upstreamTimeout: Duration) async throws {
        let client = FuzzClient(system, upstreamTimeout: upstreamTimeout)
        let late = upstreamTimeout + .milliseconds(1_000)

        // MARK: add_item against hostile product details (one product and one new user per case).
        typealias Case = (label: String, script: (Int64) -> UpstreamScripts.Script, expected: Expected)
        func entries(_ make: @escaping (Int64) -> [[UInt8]]) -> (Int64) -> UpstreamScripts.Script { { p in .entries(make(p)) } }
        func price(_ json: String) -> (Int64) -> UpstreamScripts.Script { entries { [productEntry($0, price: json)] } }
        func name(_ json: String?) -> (Int64) -> UpstreamScripts.Script { entries { [productEntry($0, name: json)] } }
        let nameOf512 = String(repeating: "n", count: 512)
        let accents = String(repeating: "é", count: 256)  // 512 bytes
        let euros = String(repeating: "€", count: 171)  // 513 bytes
        let hugeText = String(repeating: "7", count: 900_000)
        let productCases: [Case] = [
            // Usable answers.
            ("string price", price(#""19.99""#), .ok(price: "19.99")),
            ("string price with one decimal", price(#""19.9""#), .ok(price: "19.90")),
            ("string price without decimals", price(#""19""#), .ok(price: "19.00")),
            ("JSON integer price (whole units)", price("7"), .ok(price: "7.00")),
            ("JSON decimal price", price("19.5"), .ok(price: "19.50")),
            ("JSON decimal price of one cent", price("0.01"), .ok(price: "0.01")),
            ("zero price", price(#""0.00""#), .ok(price: "0.00")),
            ("JSON zero price", price("0"), .ok(price: "0.00")),
            ("the largest price", price(#""999999999999.99""#), .ok(price: "999999999999.99")),
            ("the largest JSON integer price", price("999999999999"), .ok(price: "999999999999.00")),
            ("512-byte name", name("\"\(nameOf512)\""), .ok(price: "1.00", name: nameOf512)),
            ("512-byte name of two-byte characters", name("\"\(accents)\""), .ok(price: "1.00", name: accents)),
            ("escaped name", name(#""Mug \"big\" \\ \u00e9 \ud83d\ude00""#), .ok(price: "1.00", name: "Mug \"big\" \\ é 😀")),
            ("extra fields", entries { [productEntry($0, extra: #""color":"red","nested":{"a":[1,2,{"b":null}]},"price_eur":true"#)] }, .ok(price: "1.00")),
            ("a ~1 MB extra field", entries { [productEntry($0, extra: "\"blob\":\"\(hugeText)\"")] }, .ok(price: "1.00")),
            ("identical duplicate entries", entries { [productEntry($0), productEntry($0)] }, .ok(price: "1.00")),
            ("listed in products and in not_found", answers { r in
                let p = r.productIds.first ?? 0
                return [FakeUpstream.Answer(#"{"request_id":\#(r.requestIdJSON),"products":[{"product_id":\#(p),"name":"x","price":"1.00"}],"not_found":[\#(p)]}"#)]
            }, .ok(price: "1.00")),
            ("unasked entries around it, some broken", entries { p in
                [productEntry(p + 1, price: "true"), productEntry(p), productEntry(p + 2, name: "7"), Array(#"{"product_id":"\#(p)"}"#.utf8)]
            }, .ok(price: "1.00")),
            ("3000 unasked entries", entries { p in (1...3_000).map { productEntry(p + Int64($0)) } + [productEntry(p, price: #""4.00""#)] }, .ok(price: "4.00")),
            ("no correlation-id header, the body's request_id matches", answers { r in
                [FakeUpstream.Answer(#"{"request_id":\#(r.requestIdJSON),"products":[\#(String(decoding: productEntry(r.productIds.first ?? 0), as: UTF8.self))]}"#, correlation: .none)]
            }, .ok(price: "1.00")),
            ("an answer for an unknown correlation id first, then the right one", answers { r in
                let body = #"{"request_id":\#(r.requestIdJSON),"products":[\#(String(decoding: productEntry(r.productIds.first ?? 0, price: #""5.00""#), as: UTF8.self))]}"#
                let wrong = #"{"request_id":"nobody-1","products":[\#(String(decoding: productEntry(r.productIds.first ?? 0, price: #""6.00""#), as: UTF8.self))]}"#
                return [FakeUpstream.Answer(wrong, correlation: .other("nobody-1")), FakeUpstream.Answer(body, delay: .milliseconds(200))]
            }, .ok(price: "5.00")),
            ("duplicate answers: the first wins", answers { r in
                let first = #"{"request_id":\#(r.requestIdJSON),"products":[\#(String(decoding: productEntry(r.productIds.first ?? 0, price: #""2.00""#), as: UTF8.self))]}"#
                let second = #"{"request_id":\#(r.requestIdJSON),"products":[\#(String(decoding: productEntry(r.productIds.first ?? 0, price: #""3.00""#), as: UTF8.self))]}"#
                return [FakeUpstream.Answer(first), FakeUpstream.Answer(second), FakeUpstream.Answer(second, delay: .milliseconds(300))]
            }, .ok(price: "2.00")),

            // Broken entries: the product is not found.
            ("price true", price("true"), .error("product_not_found")),
            ("price false", price("false"), .error("product_not_found")),
            ("price array", price(#"["1.00"]"#), .error("product_not_found")),
            ("price object", price(#"{"amount":"1.00","currency":"EUR"}"#), .error("product_not_found")),
            ("price null", price("null"), .error("product_not_found")),
            ("price missing", entries { [productEntry($0, price: nil)] }, .error("product_not_found")),
            ("price with three decimals", price(#""1.999""#), .error("product_not_found")),
            ("JSON price with three decimals", price("1.999"), .error("product_not_found")),
            ("JSON price 1.000", price("1.000"), .error("product_not_found")),
            ("exponent price string", price(#""1e3""#), .error("product_not_found")),
            ("exponent JSON price", price("1e3"), .error("product_not_found")),
            ("exponent JSON price 1E2", price("1E2"), .error("product_not_found")),
            ("exponent JSON price 1.5e-1", price("1.5e-1"), .error("product_not_found")),
            ("negative price string", price(#""-1.00""#), .error("product_not_found")),
            ("negative zero price string", price(#""-0""#), .error("product_not_found")),
            ("negative JSON price", price("-1"), .error("product_not_found")),
            ("negative JSON decimal price", price("-0.50"), .error("product_not_found")),
            ("13-digit price string", price(#""1234567890123""#), .error("product_not_found")),
            ("13-digit price string with decimals", price(#""1000000000000.00""#), .error("product_not_found")),
            ("13-digit JSON integer price", price("1000000000000"), .error("product_not_found")),
            ("13-digit JSON decimal price", price("1000000000000.00"), .error("product_not_found")),
            ("10^30 JSON integer price", price("1" + String(repeating: "0", count: 30)), .error("product_not_found")),
            ("10^30 price string", price("\"1" + String(repeating: "0", count: 30) + "\""), .error("product_not_found")),
            ("1e30 JSON price", price("1e30"), .error("product_not_found")),
            ("Int64.max JSON price", price("9223372036854775807"), .error("product_not_found")),
            ("Int64.min JSON price", price("-9223372036854775808"), .error("product_not_found")),
            ("price with spaces", price(#"" 1.00""#), .error("product_not_found")),
            ("price with trailing space", price(#""1.00 ""#), .error("product_not_found")),
            ("price with a plus sign", price(#""+1.00""#), .error("product_not_found")),
            ("price with a decimal comma", price(#""1,00""#), .error("product_not_found")),
            ("empty price string", price(#""""#), .error("product_not_found")),
            ("price NaN", price(#""NaN""#), .error("product_not_found")),
            ("price Infinity", price(#""Infinity""#), .error("product_not_found")),
            ("price .5", price(#"".5""#), .error("product_not_found")),
            ("price 5.", price(#""5.""#), .error("product_not_found")),
            ("price in Arabic-Indic digits", price(#""١٢""#), .error("product_not_found")),
            ("hex price", price(#""0x10""#), .error("product_not_found")),
            ("price 1.0.0", price(#""1.0.0""#), .error("product_not_found")),
            ("a ~1 MB price", price("\"\(hugeText)\""), .error("product_not_found")),
            ("name a number", name("42"), .error("product_not_found")),
            ("name true", name("true"), .error("product_not_found")),
            ("name null", name("null"), .error("product_not_found")),
            ("name an array", name(#"["Mug"]"#), .error("product_not_found")),
            ("name missing", name(nil), .error("product_not_found")),
            ("empty name", name(#""""#), .error("product_not_found")),
            ("NUL in the name", name(#""Mug\u0000Evil""#), .error("product_not_found")),
            ("name only NUL", name(#""\u0000""#), .error("product_not_found")),
            ("513-byte name", name("\"\(nameOf512)x\""), .error("product_not_found")),
            ("513-byte name of three-byte characters", name("\"\(euros)\""), .error("product_not_found")),
            ("a ~1 MB name", name("\"\(hugeText)\""), .error("product_not_found")),
            ("product_id a string", entries { p in [Array(#"{"product_id":"\#(p)","name":"Fuzz","price":"1.00"}"#.utf8)] }, .error("product_not_found")),
            ("product_id a float", entries { p in [Array(#"{"product_id":\#(p).0,"name":"Fuzz","price":"1.00"}"#.utf8)] }, .error("product_not_found")),
            ("product_id with an exponent", entries { p in [Array(#"{"product_id":\#(p)e0,"name":"Fuzz","price":"1.00"}"#.utf8)] }, .error("product_not_found")),
            ("product_id missing", entries { _ in [Array(#"{"name":"Fuzz","price":"1.00"}"#.utf8)] }, .error("product_not_found")),
            ("only product_id", entries { p in [Array(#"{"product_id":\#(p)}"#.utf8)] }, .error("product_not_found")),
            ("empty entry", entries { _ in [Array("{}".utf8)] }, .error("product_not_found")),
            ("entries that are not objects", entries { p in [Array(#"1,"x",null,true,[\#(p)],[{"product_id":\#(p)}]"#.utf8)] }, .error("product_not_found")),
            ("conflicting duplicate prices", entries { [productEntry($0, price: #""1.00""#), productEntry($0, price: #""2.00""#)] }, .error("product_not_found")),
            ("conflicting duplicate names", entries { [productEntry($0, name: #""A""#), productEntry($0, name: #""B""#)] }, .error("product_not_found")),
            ("a broken entry, then a good one", entries { [productEntry($0, price: "true"), productEntry($0)] }, .error("product_not_found")),
            ("a good entry, then a broken one", entries { [productEntry($0), productEntry($0, price: #""-1""#)] }, .error("product_not_found")),
            ("a good entry, a conflicting one, the good one again", entries { [productEntry($0), productEntry($0, price: "2"), productEntry($0)] }, .error("product_not_found")),
            ("products empty, not_found lists it", wholeAnswer { #"{"request_id":\#($0),"products":[],"not_found":[1]}"# }, .error("product_not_found")),

            // Unusable answers (matched by correlation-id): upstream_timeout at once.
            ("products missing", wholeAnswer { #"{"request_id":\#($0)}"# }, .timeoutAtOnce),
            ("products an object", wholeAnswer { #"{"request_id":\#($0),"products":{}}"# }, .timeoutAtOnce),
            ("products a string", wholeAnswer { #"{"request_id":\#($0),"products":"all"}"# }, .timeoutAtOnce),
            ("products null", wholeAnswer { #"{"request_id":\#($0),"products":null}"# }, .timeoutAtOnce),
            ("products a number", wholeAnswer { #"{"request_id":\#($0),"products":1}"# }, .timeoutAtOnce),
            ("not JSON", rawAnswer(Array("not json".utf8)), .timeoutAtOnce),
            ("empty value", rawAnswer([]), .timeoutAtOnce),
            ("tombstone (no value)", rawAnswer(nil), .timeoutAtOnce),
            ("a JSON array", wholeAnswer { #"[{"request_id":\#($0),"products":[]}]"# }, .timeoutAtOnce),
            ("a JSON string", rawAnswer(Array(#""products""#.utf8)), .timeoutAtOnce),
            ("a JSON number", rawAnswer(Array("123".utf8)), .timeoutAtOnce),
            ("JSON null", rawAnswer(Array("null".utf8)), .timeoutAtOnce),
            ("truncated JSON", wholeAnswer { #"{"request_id":\#($0),"products":[{"product_id":1,"na"# }, .timeoutAtOnce),
            ("trailing garbage", wholeAnswer { #"{"request_id":\#($0),"products":[]} x"# }, .timeoutAtOnce),
            ("a byte-order mark first", answers { r in [FakeUpstream.Answer(value: [0xEF, 0xBB, 0xBF] + Array(#"{"request_id":\#(r.requestIdJSON),"products":[]}"#.utf8))] }, .timeoutAtOnce),
            ("invalid UTF-8 in a name", entries { p in
                [Array(#"{"product_id":\#(p),"name":"Mug"#.utf8) + [0xFF, 0xFE] + Array(#"","price":"1.00"}"#.utf8)]
            }, .timeoutAtOnce),
            ("overlong UTF-8 in a name", entries { p in
                [Array(#"{"product_id":\#(p),"name":"a"#.utf8) + [0xC0, 0xAF] + Array(#"","price":"1.00"}"#.utf8)]
            }, .timeoutAtOnce),
            ("UTF-8 surrogate bytes in a name", entries { p in
                [Array(#"{"product_id":\#(p),"name":"a"#.utf8) + [0xED, 0xA0, 0x80] + Array(#"","price":"1.00"}"#.utf8)]
            }, .timeoutAtOnce),
            ("an unpaired surrogate escape in a name", name(#""a\ud800b""#), .timeoutAtOnce),
            ("a raw control character in a name", entries { p in
                [Array(#"{"product_id":\#(p),"name":"a"#.utf8) + [0x01] + Array(#"","price":"1.00"}"#.utf8)]
            }, .timeoutAtOnce),
            ("nesting deeper than 64", entries { p in
                [productEntry(p, extra: #""deep":"# + String(repeating: "[", count: 100) + String(repeating: "]", count: 100))]
            }, .timeoutAtOnce),

            // Nothing usable arrives: upstream_timeout after the timeout.
            ("no answer at all", answers { _ in [] }, .timeoutAfterWait),
            ("only an answer with an unknown correlation id", answers { r in
                [FakeUpstream.Answer(#"{"request_id":"nobody-2","products":[\#(String(decoding: productEntry(r.productIds.first ?? 0), as: UTF8.self))]}"#, correlation: .other("nobody-2"))]
            }, .timeoutAfterWait),
            ("unknown correlation-id header, the body's request_id matches", answers { r in
                [FakeUpstream.Answer(#"{"request_id":\#(r.requestIdJSON),"products":[\#(String(decoding: productEntry(r.productIds.first ?? 0), as: UTF8.self))]}"#, correlation: .other("nobody-3"))]
            }, .timeoutAfterWait),
            ("no header, an unknown request_id", wholeAnswer({ _ in #"{"request_id":"nobody-4","products":[]}"# }, correlation: .none), .timeoutAfterWait),
            ("a late answer after the timeout", answers { r in
                [FakeUpstream.Answer(#"{"request_id":\#(r.requestIdJSON),"products":[\#(String(decoding: productEntry(r.productIds.first ?? 0), as: UTF8.self))]}"#, delay: late)]
            }, .timeoutAfterWait),
        ]
        var addedOK: [(user: Int64, product: Int64, price: String?)] = []
        for c in productCases {
            let user = client.newUser()
            let product = TestCatalog.uniqueProductId()
            scripts.product(product, c.script(product))
            let result = try await client.addItem(user, product, 1, "add_item, \(c.label)")
            client.check(result, c.expected, product: product, "add_item, \(c.label)")
            if case .ok(let price, _) = c.expected {
                addedOK.append((user, product, price))
            } else {
                // Nothing changed: the new user still has no cart line.
                let cart = try await client.getCart(user, "get_cart after \(c.label)")
                #expect(cart["cart"]?["items"]?.array?.isEmpty == true, "\(c.label): \(cart.text.prefix(300))")
            }
        }
        // The first answer stays the one used, whatever came later.
        for (user, product, price) in addedOK {
            let cart = try await client.getCart(user, "get_cart of \(product)")
            let line = cart["cart"]?["items"]?.array?.first { $0["product_id"]?.int == product }
            if let price { #expect(line?["unit_price"]?.string == price) }
        }

        // MARK: the bound of 999999999999.99 on lines and carts.
        do {
            let user = client.newUser()
            let top = TestCatalog.uniqueProductId()
            scripts.product(top, .entries([productEntry(top, price: #""999999999999.99""#)]))
            var r = try await client.addItem(user, top, 1, "add_item of the largest price")
            client.check(r, .ok(price: "999999999999.99"), product: top, "largest price")
            #expect(r.reply["cart"]?["total_price"]?.string == "999999999999.99")
            r = try await client.addItem(user, top, 1, "add_item taking the line past the bound")
            client.check(r, .error("invalid_request"), "line past the bound")
            for i in 0..<10 {
                let p = TestCatalog.uniqueProductId()
                scripts.product(p, .entries([productEntry(p, price: #""1.00""#)]))
                r = try await client.addItem(user, p, 10_000, "add_item of 10000 × 1.00 onto a full-value cart (\(i))")
                client.check(r, .error("invalid_request"), "cart past the bound \(i)")
            }
            let cent = TestCatalog.uniqueProductId()
            scripts.product(cent, .entries([productEntry(cent, price: #""0.01""#)]))
            r = try await client.addItem(user, cent, 1, "add_item of one cent onto a full-value cart")
            client.check(r, .error("invalid_request"), "one cent past the bound")
            let cart = try await client.getCart(user, "get_cart of the full-value cart")
            #expect(cart["cart"]?["items"]?.array?.count == 1)
            #expect(cart["cart"]?["total_price"]?.string == "999999999999.99")
            let big = TestCatalog.uniqueProductId()
            scripts.product(big, .entries([productEntry(big, price: #""999999999999.99""#)]))
            r = try await client.addItem(client.newUser(), big, 10_000, "add_item of 10000 × the largest price")
            client.check(r, .error("invalid_request"), "10000 × the largest price")
        }
        do {
            // Ten products of 10,000 × 99,999,999.99: the first line fits, the cart cannot take a second.
            let user = client.newUser()
            for i in 0..<10 {
                let p = TestCatalog.uniqueProductId()
                scripts.product(p, .entries([productEntry(p, price: #""99999999.99""#)]))
                let r = try await client.addItem(user, p, 10_000, "add_item of 10000 × 99999999.99 (\(i))")
                client.check(r, i == 0 ? .ok(price: "99999999.99") : .error("invalid_request"), product: p, "ten big lines \(i)")
                if i == 0 { #expect(r.reply["cart"]?["total_price"]?.string == "999999999900.00") }
            }
            let rest = TestCatalog.uniqueProductId()
            scripts.product(rest, .entries([productEntry(rest, price: #""99.99""#)]))
            var r = try await client.addItem(user, rest, 1, "add_item up to exactly the bound")
            client.check(r, .ok(price: "99.99"), product: rest, "up to the bound")
            #expect(r.reply["cart"]?["total_price"]?.string == "999999999999.99")
            r = try await client.addItem(user, rest, 1, "add_item one step past the bound")
            client.check(r, .error("invalid_request"), "past the bound")
        }
        do {
            // create_order at looked-up prices whose total passes the bound: invalid_request, cart unchanged.
            let user = client.newUser()
            var products: [Int64] = []
            for i in 0..<10 {
                let p = TestCatalog.uniqueProductId()
                products.append(p)
                scripts.product(p, .entries([productEntry(p, price: #""1.00""#)]))
                let r = try await client.addItem(user, p, 10_000, "add_item of 10000 × 1.00 (\(i))")
                client.check(r, .ok(price: "1.00"), product: p, "cheap line \(i)")
            }
            for p in products { scripts.product(p, .entries([productEntry(p, price: #""99999999.99""#)])) }
            var r = try await client.createOrder(user, "create_order whose total passes the bound")
            client.check(r, .error("invalid_request"), "order total past the bound")
            scripts.product(products[0], .entries([productEntry(products[0], price: #""999999999999.99""#)]))
            for p in products.dropFirst() { scripts.product(p, .entries([productEntry(p, price: #""1.00""#)])) }
            r = try await client.createOrder(user, "create_order whose line passes the bound")
            client.check(r, .error("invalid_request"), "order line past the bound")
            let cart = try await client.getCart(user, "get_cart after refused orders")
            #expect(cart["cart"]?["items"]?.array?.count == 10)
            #expect(cart["cart"]?["total_price"]?.string == "100000.00")
            let orders = try await client.listOrders(user, "list_orders after refused orders")
            #expect(orders["orders"]?.array?.isEmpty == true)
            #expect(system.process("order-service")?.isRunning == true, "the order service died on an order past the bound")
            // At prices within the bound it goes through.
            scripts.product(products[0], .entries([productEntry(products[0], price: #""2.00""#)]))
            r = try await client.createOrder(user, "create_order within the bound")
            client.check(r, .ok(), "order within the bound")
            #expect(r.reply["order"]?["total_price"]?.string == "110000.00")
        }

        // MARK: create_order against hostile product details and availability.
        do {
            // Product details change between add_item and create_order.
            typealias OrderCase = (label: String, second: (Int64) -> UpstreamScripts.Script, expected: Expected)
            let orderProductCases: [OrderCase] = [
                ("second product's price now has three decimals", price(#""1.999""#), .error("product_not_found")),
                ("second product not mentioned any more", { _ in .entries([]) }, .error("product_not_found")),
                ("second product's entries now conflict", entries { [productEntry($0, price: "1"), productEntry($0, price: "2")] }, .error("product_not_found")),
                ("second product's name now has NUL", name(#""x\u0000""#), .error("product_not_found")),
                ("the details answer is not JSON", rawAnswer(Array("<html>".utf8)), .timeoutAtOnce),
                ("the details answer has no products", wholeAnswer { #"{"request_id":\#($0),"not_found":[]}"# }, .timeoutAtOnce),
                ("the details answer comes late", answers { r in
                    [FakeUpstream.Answer(#"{"request_id":\#(r.requestIdJSON),"products":[]}"#, delay: late)]
                }, .timeoutAfterWait),
            ]
            for c in orderProductCases {
                let user = client.newUser()
                let first = TestCatalog.uniqueProductId()
                let second = TestCatalog.uniqueProductId()
                scripts.product(first, .entries([productEntry(first, price: #""2.50""#)]))
                scripts.product(second, .entries([productEntry(second, price: #""4.00""#)]))
                client.check(try await client.addItem(user, first, 1, "add_item, \(c.label)"), .ok(price: "2.50"), product: first, c.label)
                client.check(try await client.addItem(user, second, 2, "add_item, \(c.label)"), .ok(price: "4.00"), product: second, c.label)
                scripts.product(second, c.second(second))
                let r = try await client.createOrder(user, "create_order, \(c.label)")
                client.check(r, c.expected, product: second, "create_order, \(c.label)")
                let cart = try await client.getCart(user, "get_cart after \(c.label)")
                #expect(cart["cart"]?["items"]?.array?.compactMap { $0["product_id"]?.int } == [first, second], "\(c.label)")
                #expect(cart["cart"]?["total_price"]?.string == "10.50", "\(c.label)")
                let orders = try await client.listOrders(user, "list_orders after \(c.label)")
                #expect(orders["orders"]?.array?.isEmpty == true, "\(c.label)")
            }
        }
        do {
            // Availability answers; the cart holds 2 of one product at 3.00.
            typealias StockCase = (label: String, script: (Int64) -> UpstreamScripts.Script, expected: Expected, available: Int64?)
            func item(_ json: String) -> (Int64) -> UpstreamScripts.Script {
                { p in .entries([Array(#"{"product_id":\#(p),"requested":2,"available":\#(json)}"#.utf8)]) }
            }
            func items(_ make: @escaping (Int64) -> [String]) -> (Int64) -> UpstreamScripts.Script { { p in .entries(make(p).map { Array($0.utf8) }) } }
            let stockCases: [StockCase] = [
                ("enough", item("5"), .ok(), nil),
                ("exactly enough", item("2"), .ok(), nil),
                ("Int64.max available", item("9223372036854775807"), .ok(), nil),
                ("agreeing duplicates", items { p in [#"{"product_id":\#(p),"available":5}"#, #"{"product_id":\#(p),"available":5}"#] }, .ok(), nil),
                ("only product_id and available", items { p in [#"{"product_id":\#(p),"available":7}"#] }, .ok(), nil),
                ("extra fields and a broken unasked entry", items { p in
                    [#"{"product_id":\#(p + 1),"available":-5}"#, #"{"product_id":\#(p),"requested":99,"available":3,"warehouse":{"id":[1]}}"#, #"{"product_id":"x"}"#, "7"]
                }, .ok(), nil),
                ("one short", item("1"), .error("insufficient_stock"), 1),
                ("none available", item("0"), .error("insufficient_stock"), 0),
                ("not mentioned", items { _ in [] }, .error("insufficient_stock"), 0),
                ("only another product mentioned", items { p in [#"{"product_id":\#(p + 1),"available":100}"#] }, .error("insufficient_stock"), 0),
                ("product_id a string", items { p in [#"{"product_id":"\#(p)","available":100}"#] }, .error("insufficient_stock"), 0),
                ("product_id a float", items { p in [#"{"product_id":\#(p).0,"available":100}"#] }, .error("insufficient_stock"), 0),
                ("available negative", item("-1"), .timeoutAtOnce, nil),
                ("available Int64.min", item("-9223372036854775808"), .timeoutAtOnce, nil),
                ("available a float", item("5.0"), .timeoutAtOnce, nil),
                ("available a fraction", item("2.5"), .timeoutAtOnce, nil),
                ("available with an exponent", item("1e3"), .timeoutAtOnce, nil),
                ("available 10^30", item("1" + String(repeating: "0", count: 30)), .timeoutAtOnce, nil),
                ("available a string", item(#""5""#), .timeoutAtOnce, nil),
                ("available null", item("null"), .timeoutAtOnce, nil),
                ("available true", item("true"), .timeoutAtOnce, nil),
                ("available an object", item(#"{"n":5}"#), .timeoutAtOnce, nil),
                ("available missing", items { p in [#"{"product_id":\#(p),"requested":2}"#] }, .timeoutAtOnce, nil),
                ("conflicting duplicates", items { p in [#"{"product_id":\#(p),"available":5}"#, #"{"product_id":\#(p),"available":6}"#] }, .timeoutAtOnce, nil),
                ("a good entry, then a negative one", items { p in [#"{"product_id":\#(p),"available":5}"#, #"{"product_id":\#(p),"available":-1}"#] }, .timeoutAtOnce, nil),
                ("items missing", wholeAnswer { #"{"request_id":\#($0)}"# }, .timeoutAtOnce, nil),
                ("items an object", wholeAnswer { #"{"request_id":\#($0),"items":{"a":1}}"# }, .timeoutAtOnce, nil),
                ("not JSON", rawAnswer(Array("OK".utf8)), .timeoutAtOnce, nil),
                ("tombstone", rawAnswer(nil), .timeoutAtOnce, nil),
                ("invalid UTF-8", answers { r in
                    [FakeUpstream.Answer(value: Array(#"{"request_id":\#(r.requestIdJSON),"items":[],"note":""#.utf8) + [0xFE, 0xFF] + Array("\"}".utf8))]
                }, .timeoutAtOnce, nil),
                ("a ~1 MB answer", wholeAnswer { #"{"request_id":\#($0),"items":[],"pad":"\#(hugeText)"}"# }, .error("insufficient_stock"), 0),
                ("duplicate answers: the first (none available) wins", answers { r in
                    let p = r.productIds.first ?? 0
                    return [
                        FakeUpstream.Answer(#"{"request_id":\#(r.requestIdJSON),"items":[{"product_id":\#(p),"available":0}]}"#),
                        FakeUpstream.Answer(#"{"request_id":\#(r.requestIdJSON),"items":[{"product_id":\#(p),"available":50}]}"#, delay: .milliseconds(200)),
                    ]
                }, .error("insufficient_stock"), 0),
                ("only an unknown correlation id", answers { r in
                    [FakeUpstream.Answer(#"{"request_id":"nobody-5","items":[{"product_id":\#(r.productIds.first ?? 0),"available":50}]}"#, correlation: .other("nobody-5"))]
                }, .timeoutAfterWait, nil),
                ("a late answer", answers { r in
                    [FakeUpstream.Answer(#"{"request_id":\#(r.requestIdJSON),"items":[{"product_id":\#(r.productIds.first ?? 0),"available":50}]}"#, delay: late)]
                }, .timeoutAfterWait, nil),
                ("no answer", answers { _ in [] }, .timeoutAfterWait, nil),
            ]
            for c in stockCases {
                let user = client.newUser()
                let product = TestCatalog.uniqueProductId()
                scripts.product(product, .entries([productEntry(product, price: #""3.00""#)]))
                client.check(try await client.addItem(user, product, 2, "add_item, stock: \(c.label)"), .ok(price: "3.00"), product: product, c.label)
                scripts.stock(product, c.script(product))
                let r = try await client.createOrder(user, "create_order, stock: \(c.label)")
                client.check(r, c.expected, product: product, "create_order, stock: \(c.label)")
                if let available = c.available {
                    let short = r.reply["error"]?["items"]?.array
                    #expect(short?.count == 1, "\(c.label)")
                    #expect(short?.first?["product_id"]?.int == product, "\(c.label)")
                    #expect(short?.first?["requested"]?.int == 2, "\(c.label)")
                    #expect(short?.first?["available"]?.int == available, "\(c.label): \(r.reply.text.prefix(300))")
                }
                let cart = try await client.getCart(user, "get_cart after stock: \(c.label)")
                let orders = try await client.listOrders(user, "list_orders after stock: \(c.label)")
                if case .ok = c.expected {
                    #expect(r.reply["order"]?["total_price"]?.string == "6.00", "\(c.label)")
                    #expect(cart["cart"]?["items"]?.array?.isEmpty == true, "\(c.label)")
                    #expect(orders["orders"]?.array?.count == 1, "\(c.label)")
                } else {
                    #expect(cart["cart"]?["items"]?.array?.compactMap { $0["quantity"]?.int } == [2], "\(c.label)")
                    #expect(orders["orders"]?.array?.isEmpty == true, "\(c.label)")
                }
            }
        }

        // MARK: random product details, many lookups at once (they travel together upstream).
        // Each product's entry combines a name and a price of known usability, in random field
        // order, with random extra fields, identical repeats and broken entries of unasked ids.
        let seed = ProcessInfo.processInfo.environment["UPSTREAM_FUZZ_SEED"].flatMap { UInt64($0) } ?? UInt64.random(in: 0...UInt64.max)
        var rng = SeededRandom(seed: seed)
        do {
            let names: [(json: String, name: String?)] = [
                (#""Mug""#, "Mug"), (#""Ünïcödé 😀""#, "Ünïcödé 😀"), (#""\u00e9t\u00e9""#, "été"), (#""a\/b""#, "a/b"),
                (#""tab\there""#, "tab\there"), ("\"\(nameOf512)\"", nameOf512), (#"" ""#, " "),
                ("42", nil), ("null", nil), (#""""#, nil), (#""x\u0000""#, nil), ("\"\(nameOf512)y\"", nil), (#"["a"]"#, nil),
                ("{}", nil), ("false", nil),
            ]
            let prices: [(json: String, cents: Int64?)] = [
                (#""0""#, 0), (#""12.3""#, 1_230), ("12", 1_200), ("12.34", 1_234), (#""999999999999.99""#, 99_999_999_999_999),
                ("0.5", 50), (#""250000000000""#, 25_000_000_000_000), ("999999999999", 99_999_999_999_900),
                (#""1.234""#, nil), ("-1", nil), ("1e2", nil), ("true", nil), ("null", nil), (#""abc""#, nil), ("[]", nil),
                (#""1000000000000""#, nil), ("1.5e1", nil), (#""-0.01""#, nil), ("12.345", nil),
            ]
            let extras = [#""x":1"#, #""tags":["a",{"b":[]}]"#, #""price_text":"n/a""#, #""not_found":true"#, #""name_en":null"#]
            var requests: [(logical: String, fields: [(String, JSON)], label: String)] = []
            var expectations: [(product: Int64, expected: Expected)] = []
            for n in 0..<80 {
                let user = client.newUser()
                let product = TestCatalog.uniqueProductId()
                let name = names[Int.random(in: 0..<names.count, using: &rng)]
                let price = prices[Int.random(in: 0..<prices.count, using: &rng)]
                let quantity = Int64.random(in: 1...4, using: &rng)
                var fields = [#""product_id":\#(product)"#, #""name":\#(name.json)"#, #""price":\#(price.json)"#]
                for _ in 0..<Int.random(in: 0...2, using: &rng) { fields.append(extras[Int.random(in: 0..<extras.count, using: &rng)]) }
                fields.shuffle(using: &rng)
                let entry = Array("{\(fields.joined(separator: ","))}".utf8)
                var entries = [entry]
                if Bool.random(using: &rng) { entries.append(entry) }  // an identical repeat
                if Int.random(in: 0..<3, using: &rng) == 0 { entries.append(productEntry(product + 1, name: "7", price: "false")) }
                entries.shuffle(using: &rng)
                scripts.product(product, .entries(entries))
                let expected: Expected
                if name.name == nil || price.cents == nil {
                    expected = .error("product_not_found")
                } else if let cents = price.cents, cents.multipliedReportingOverflow(by: quantity).partialValue > 99_999_999_999_999 {
                    expected = .error("invalid_request")
                } else {
                    let cents = price.cents ?? 0
                    expected = .ok(price: "\(cents / 100).\(cents % 100 < 10 ? "0" : "")\(cents % 100)", name: name.name)
                }
                let label = "random details #\(n) (seed \(seed)): name \(name.json.prefix(20)), price \(price.json), quantity \(quantity)"
                requests.append(("cart_requests", [("action", "add_item"), ("user_id", .int(user)), ("product_id", .int(product)), ("quantity", .int(quantity))], label))
                expectations.append((product, expected))
            }
            let results = try await client.sendConcurrently(requests)
            for (result, (request, expectation)) in zip(results, zip(requests, expectations)) {
                client.check(result, expectation.expected, product: expectation.product, request.label)
            }
        }

        // MARK: randomly damaged bytes of a good answer (one at a time): any contract reply but internal_error.
        do {
            var outcomes: [String: Int] = [:]
            for n in 0..<40 {
                let user = client.newUser()
                let product = TestCatalog.uniqueProductId()
                let quantity = Int64.random(in: 1...10_000, using: &rng)
                var mutations: [(kind: Int, position: Double, byte: UInt8)] = []
                for _ in 0..<Int.random(in: 1...3, using: &rng) {
                    mutations.append((Int.random(in: 0..<4, using: &rng), Double.random(in: 0..<1, using: &rng), UInt8.random(in: 0...255, using: &rng)))
                }
                let damage = mutations
                scripts.product(product, .answers { r in
                    var v = Array(#"{"request_id":\#(r.requestIdJSON),"products":[{"product_id":\#(product),"name":"Damaged \#(n)","price":"1\#(n).99"}]}"#.utf8)
                    for m in damage where !v.isEmpty {
                        let i = min(v.count - 1, Int(m.position * Double(v.count)))
                        switch m.kind {
                        case 0: v[i] = m.byte  // overwrite
                        case 1: v.insert(m.byte, at: i)  // insert
                        case 2: v.remove(at: i)  // delete
                        default: v = Array(v.prefix(i))  // truncate
                        }
                    }
                    return [FakeUpstream.Answer(value: v)]
                })
                let label = "damaged answer #\(n) (seed \(seed)): \(damage)"
                let result = try await client.addItem(user, product, quantity, label)
                let code = result.reply["status"]?.string == "ok" ? "ok" : (result.reply["error"]?["code"]?.string ?? "?")
                outcomes[code, default: 0] += 1
                #expect(["ok", "product_not_found", "upstream_timeout", "invalid_request"].contains(code), "\(label): \(result.reply.text.prefix(300))")
            }
            #expect(outcomes["upstream_timeout", default: 0] > 0, "seed \(seed): \(outcomes)")
        }

        // MARK: afterwards: still up, still working, everything consistent, one reply per request.
        #expect(system.process("order-service")?.isRunning == true, "the order service exited:\n\(system.process("order-service")?.log.suffix(3000) ?? "")")
        do {
            let user = client.newUser()
            let product = TestCatalog.uniqueProductId()
            scripts.product(product, .entries([productEntry(product, name: #""Normal mug""#, price: #""12.34""#)]))
            client.check(try await client.addItem(user, product, 3, "normal add_item"), .ok(price: "12.34", name: "Normal mug"), product: product, "normal add_item")
            let r = try await client.createOrder(user, "normal create_order")
            client.check(r, .ok(), "normal create_order")
            #expect(r.reply["order"]?["total_price"]?.string == "37.02")
            #expect(r.reply["order"]?["status"]?.string == "pending")
        }
        try await Task.sleep(for: late)  // late and duplicate answers have arrived (and were ignored)
        for user in client.users {
            let cart = try await client.getCart(user, "final get_cart")
            expectConsistentAmounts(cart["cart"], "cart of \(user)")
            let list = try await client.listOrders(user, "final list_orders")
            for order in list["orders"]?.array ?? [] { expectConsistentAmounts(order, "order of \(user)") }
        }
        #expect(system.process("order-service")?.isRunning == true)
        try await Task.sleep(for: .seconds(2))
        let replies = (system.records(on: "cart_responses") + system.records(on: "order_responses")).compactMap { $0.header("correlation-id")?.stringValue }
        let counts = Dictionary(replies.map { ($0, 1) }, uniquingKeysWith: +)
        let wrong = client.correlations.filter { counts[$0] != 1 }.map { "\($0): \(counts[$0] ?? 0)" }
        #expect(wrong.isEmpty, "requests without exactly one reply: \(wrong.prefix(10))")
        #expect(Set(client.correlations).count == client.correlations.count)
        #expect(fake.sendFailures.isEmpty, "\(fake.sendFailures.prefix(3))")
        let log = system.process("order-service")?.log ?? ""
        #expect(!log.contains("Fatal error"), "\(log.suffix(2000))")
    }
}

