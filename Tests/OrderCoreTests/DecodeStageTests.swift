import Testing

@testable import OrderCore

@Suite("DecodeStage", .timeLimit(.minutes(1)))
struct DecodeStageTests {
    struct Rejection: Equatable, CustomStringConvertible {
        var requestId: String?
        var action: String?
        var code: ErrorCode
        var deadLetter: Bool
        var description: String { "\(code.rawValue) rid=\(requestId ?? "nil") action=\(action ?? "nil") dlq=\(deadLetter)" }
    }

    func decode(_ text: String, on kind: RequestTopicKind) -> DecodeStage.Outcome {
        DecodeStage(topic: kind).decode(Array(text.utf8))
    }

    func rejection(_ outcome: DecodeStage.Outcome) -> Rejection? {
        guard case .rejected(let rid, let action, let error, let dead) = outcome else { return nil }
        return Rejection(requestId: rid, action: action, code: error.code, deadLetter: dead)
    }

    func message(_ outcome: DecodeStage.Outcome) -> String? {
        guard case .rejected(_, _, let error, _) = outcome else { return nil }
        return error.message
    }

    // MARK: Valid requests

    static let valid: [(RequestTopicKind, String, Command)] = [
        (.cart, #"{"action":"add_item","user_id":1,"product_id":2,"quantity":3}"#, .addItem(userId: 1, productId: 2, quantity: 3)),
        (.cart, #"{"action":"add_item","user_id":1,"product_id":2,"quantity":1}"#, .addItem(userId: 1, productId: 2, quantity: 1)),
        (.cart, #"{"action":"add_item","user_id":1,"product_id":2,"quantity":10000}"#, .addItem(userId: 1, productId: 2, quantity: 10_000)),
        (.cart, #"{"action":"get_cart","user_id":9223372036854775807}"#, .getCart(userId: .max)),
        (.cart, #"{"action":"update_item","user_id":1,"product_id":2,"quantity":0}"#, .updateItem(userId: 1, productId: 2, quantity: 0)),
        (.cart, #"{"action":"update_item","user_id":1,"product_id":2,"quantity":10000}"#, .updateItem(userId: 1, productId: 2, quantity: 10_000)),
        (.cart, #"{"action":"remove_item","user_id":1,"product_id":2}"#, .removeItem(userId: 1, productId: 2)),
        (.order, #"{"action":"create_order","user_id":5}"#, .createOrder(userId: 5)),
        (.order, #"{"action":"list_orders","user_id":5}"#, .listOrders(userId: 5)),
        (.order, #"{"action":"list_orders","user_id":5,"limit":null,"before_order_id":null}"#, .listOrders(userId: 5)),
        (.order, #"{"action":"list_orders","user_id":5,"limit":1,"before_order_id":1}"#, .listOrders(userId: 5, limit: 1, beforeOrderId: 1)),
        (.order, #"{"action":"list_orders","user_id":5,"limit":1000,"before_order_id":9223372036854775807}"#,
            .listOrders(userId: 5, limit: 1000, beforeOrderId: .max)),
        (.order, #"{"action":"get_order","user_id":5,"order_id":77}"#, .getOrder(userId: 5, orderId: 77)),
        (.admin, #"{"action":"list_carts"}"#, .listCarts(limit: 100, afterCartId: nil)),
        (.admin, #"{"action":"list_carts","limit":null,"after_cart_id":null}"#, .listCarts(limit: 100, afterCartId: nil)),
        (.admin, #"{"action":"list_carts","limit":1,"after_cart_id":0}"#, .listCarts(limit: 1, afterCartId: 0)),
        (.admin, #"{"action":"list_carts","limit":1000,"after_cart_id":42}"#, .listCarts(limit: 1000, afterCartId: 42)),
    ]

    @Test(arguments: valid)
    func everyActionDecodesOnItsTopic(_ kind: RequestTopicKind, _ text: String, _ command: Command) {
        #expect(decode(text, on: kind) == .request(Request(requestId: nil, command: command)))
    }

    @Test func requestIdIsCarried() {
        #expect(decode(#"{"request_id":"abc-1","action":"get_cart","user_id":3}"#, on: .cart)
            == .request(Request(requestId: "abc-1", command: .getCart(userId: 3))))
        #expect(decode(#"{"request_id":null,"action":"get_cart","user_id":3}"#, on: .cart)
            == .request(Request(requestId: nil, command: .getCart(userId: 3))))
        let max = String(repeating: "x", count: 128)
        #expect(decode(#"{"request_id":"\#(max)","action":"get_cart","user_id":3}"#, on: .cart)
            == .request(Request(requestId: max, command: .getCart(userId: 3))))
        #expect(decode(#"{"request_id":"","action":"get_cart","user_id":3}"#, on: .cart)
            == .request(Request(requestId: "", command: .getCart(userId: 3))))
    }

    @Test func unknownExtraFieldsAreIgnored() {
        let text = #"{"action":"add_item","user_id":1,"product_id":2,"quantity":3,"note":"hi","x":{"y":[1,2]},"price":"1.00"}"#
        #expect(decode(text, on: .cart) == .request(Request(requestId: nil, command: .addItem(userId: 1, productId: 2, quantity: 3))))
    }

    @Test func duplicateFieldsUseTheLastValue() {
        #expect(decode(#"{"action":"get_cart","user_id":"x","user_id":4}"#, on: .cart)
            == .request(Request(requestId: nil, command: .getCart(userId: 4))))
    }

    // MARK: Actions vs topics

    @Test(arguments: RequestTopicKind.allCases)
    func actionsOfOtherTopicsAreUnknownHere(_ kind: RequestTopicKind) {
        let foreign = RequestTopicKind.allCases.filter { $0 != kind }.flatMap(\.actions).filter { $0 != "list_carts" }
        for action in foreign {
            let text = #"{"request_id":"r","action":"\#(action)","user_id":1,"product_id":2,"quantity":3,"order_id":4}"#
            #expect(
                rejection(decode(text, on: kind)) == Rejection(requestId: "r", action: action, code: .unknownAction, deadLetter: false),
                "\(action) on \(kind)")
        }
    }

    @Test(arguments: [RequestTopicKind.cart, .order])
    func listCartsIsForbiddenOutsideTheAdminTopic(_ kind: RequestTopicKind) {
        #expect(rejection(decode(#"{"request_id":"r","action":"list_carts"}"#, on: kind))
            == Rejection(requestId: "r", action: "list_carts", code: .forbidden, deadLetter: false))
    }

    @Test(arguments: ["fly", "", "ADD_ITEM", "add_item ", "get_cart\u{0}", "List_Carts"])
    func unknownActions(_ action: String) {
        let outcome = DecodeStage(topic: .cart).decode(JSON.object([("action", .string(action)), ("user_id", 1)]).bytes)
        #expect(rejection(outcome) == Rejection(requestId: nil, action: action, code: .unknownAction, deadLetter: false))
    }

    @Test func unknownActionMessageIsBounded() {
        let long = String(repeating: "a", count: 10_000)
        // One grapheme cluster of 10,001 scalars: must not slip through a per-Character bound.
        let zalgo = "a" + String(repeating: "\u{301}", count: 10_000)
        for action in [long, zalgo] {
            let outcome = decode(#"{"action":"\#(action)"}"#, on: .admin)
            #expect(rejection(outcome)?.code == .unknownAction)
            #expect((message(outcome)?.utf8.count ?? .max) < 300)
        }
    }

    // MARK: Structural problems: invalid_request, dead-lettered

    @Test(arguments: [
        (RequestTopicKind.cart, #"{"action":"get_cart","user_id":"1"}"#),
        (.cart, #"{"action":"get_cart","user_id":1.5}"#),
        (.cart, #"{"action":"get_cart","user_id":2.0}"#),
        (.cart, #"{"action":"get_cart","user_id":1e2}"#),
        (.cart, #"{"action":"get_cart","user_id":true}"#),
        (.cart, #"{"action":"get_cart","user_id":[1]}"#),
        (.cart, #"{"action":"get_cart","user_id":{"id":1}}"#),
        (.cart, #"{"action":"get_cart","user_id":null}"#),
        (.cart, #"{"action":"get_cart"}"#),
        (.cart, #"{"action":"get_cart","user_id":9223372036854775808}"#),
        (.cart, #"{"action":"get_cart","user_id":-9223372036854775809}"#),
        (.cart, #"{"action":"add_item","user_id":1,"product_id":2}"#),
        (.cart, #"{"action":"add_item","user_id":1,"quantity":2}"#),
        (.cart, #"{"action":"add_item","user_id":1,"product_id":2,"quantity":"3"}"#),
        (.cart, #"{"action":"add_item","user_id":1,"product_id":2,"quantity":2.0}"#),
        (.cart, #"{"action":"add_item","user_id":1,"product_id":2,"quantity":null}"#),
        (.cart, #"{"action":"update_item","user_id":1,"product_id":"2","quantity":1}"#),
        (.cart, #"{"action":"update_item","user_id":1,"product_id":2}"#),
        (.cart, #"{"action":"remove_item","user_id":1}"#),
        (.order, #"{"action":"create_order","user_id":false}"#),
        (.order, #"{"action":"list_orders"}"#),
        (.order, #"{"action":"get_order","user_id":1}"#),
        (.order, #"{"action":"get_order","user_id":1,"order_id":"7"}"#),
        (.order, #"{"action":"get_order","user_id":1,"order_id":7.0}"#),
        (.order, #"{"action":"list_orders","user_id":1,"limit":"10"}"#),
        (.order, #"{"action":"list_orders","user_id":1,"before_order_id":2.0}"#),
        (.admin, #"{"action":"list_carts","limit":"10"}"#),
        (.admin, #"{"action":"list_carts","limit":10.0}"#),
        (.admin, #"{"action":"list_carts","after_cart_id":"5"}"#),
        (.admin, #"{"action":"list_carts","after_cart_id":1e1}"#),
    ])
    func wrongTypesAndMissingFieldsAreDeadLettered(_ kind: RequestTopicKind, _ text: String) {
        let withId = "{\"request_id\":\"r-9\"," + text.dropFirst()
        let expectedAction: String? = if case .string(let a)? = JSON.literal(text)["action"] { a } else { nil }
        #expect(rejection(decode(withId, on: kind))
            == Rejection(requestId: "r-9", action: expectedAction, code: .invalidRequest, deadLetter: true))
    }

    @Test(arguments: [#"{"user_id":1}"#, #"{"action":null}"#, #"{"action":5}"#, #"{"action":["get_cart"]}"#, #"{"action":{"x":1}}"#, #"{"action":true}"#])
    func missingOrNonStringActionIsDeadLettered(_ text: String) {
        let withId = "{\"request_id\":\"r\"," + text.dropFirst()
        #expect(rejection(decode(withId, on: .cart)) == Rejection(requestId: "r", action: nil, code: .invalidRequest, deadLetter: true))
    }

    @Test func noValueIsDeadLettered() {
        #expect(rejection(DecodeStage(topic: .cart).decode(nil))
            == Rejection(requestId: nil, action: nil, code: .invalidRequest, deadLetter: true))
    }

    @Test(arguments: ["[]", "[{\"action\":\"get_cart\",\"user_id\":1}]", "1", "\"get_cart\"", "null", "true", "3.5"])
    func nonObjectJSONIsDeadLettered(_ text: String) {
        #expect(rejection(decode(text, on: .cart)) == Rejection(requestId: nil, action: nil, code: .invalidRequest, deadLetter: true))
    }

    @Test(arguments: ["", " ", "{", "{\"action\":\"get_cart\",\"user_id\":1", "{\"action\":\"get_cart\",\"user_id\":1}x", "{'action':'get_cart'}"])
    func notJSONIsDeadLettered(_ text: String) {
        #expect(rejection(decode(text, on: .cart)) == Rejection(requestId: nil, action: nil, code: .invalidRequest, deadLetter: true))
    }

    @Test func nonUTF8BytesAreDeadLettered() {
        let stage = DecodeStage(topic: .cart)
        let inString = Array(#"{"action":"get_cart","user_id":1,"note":""#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8)
        #expect(rejection(stage.decode(inString)) == Rejection(requestId: nil, action: nil, code: .invalidRequest, deadLetter: true))
        let latin1 = Array(#"{"action":"get_cart","user_id":1,"name":""#.utf8) + [0xE9] + Array(#""}"#.utf8)
        #expect(rejection(stage.decode(latin1))?.deadLetter == true)
        #expect(rejection(stage.decode([0xFF, 0xFE, 0x7B, 0x00, 0x7D, 0x00]))?.deadLetter == true)  // UTF-16
    }

    @Test func requestIdOfWrongTypeIsDeadLetteredWithoutARequestIdButWithTheReadableAction() {
        for rid in ["5", "true", "[\"a\"]", "{\"a\":1}", "1.5"] {
            let outcome = decode(#"{"request_id":\#(rid),"action":"get_cart","user_id":1}"#, on: .cart)
            #expect(rejection(outcome) == Rejection(requestId: nil, action: "get_cart", code: .invalidRequest, deadLetter: true), "\(rid)")
        }
        let noAction = decode(#"{"request_id":5,"action":7,"user_id":1}"#, on: .cart)
        #expect(rejection(noAction) == Rejection(requestId: nil, action: nil, code: .invalidRequest, deadLetter: true))
    }

    @Test func requestIdLongerThan128IsNotEchoed() {
        let long = String(repeating: "y", count: 129)
        let outcome = decode(#"{"request_id":"\#(long)","action":"get_cart","user_id":1}"#, on: .cart)
        #expect(rejection(outcome) == Rejection(requestId: nil, action: "get_cart", code: .invalidRequest, deadLetter: true))
        #expect(message(outcome)?.contains("request_id") == true)
    }

    @Test(arguments: [
        String(repeating: "\u{E9}", count: 128),  // precomposed é: 128 scalars
        String(repeating: "😀", count: 128),
        String(repeating: "e\u{301}", count: 64),  // 128 scalars, 64 graphemes
        String(repeating: "\\", count: 128),  // escaped in JSON, 128 once decoded
    ])
    func requestIdsOf128ScalarsAreAccepted(_ rid: String) {
        let outcome = DecodeStage(topic: .cart).decode(
            JSON.object([("request_id", .string(rid)), ("action", "get_cart"), ("user_id", 1)]).bytes)
        #expect(outcome == .request(Request(requestId: rid, command: .getCart(userId: 1))))
    }

    @Test(arguments: [
        String(repeating: "\u{E9}", count: 129),
        String(repeating: "e\u{301}", count: 65),  // 65 graphemes but 130 scalars
        "a" + String(repeating: "\u{301}", count: 100_000),  // a single grapheme of 100,001 scalars
        String(repeating: "🇩🇪", count: 100),  // 100 flags, 200 scalars
    ])
    func requestIdsLongerThan128ScalarsAreRejected(_ rid: String) {
        let outcome = DecodeStage(topic: .cart).decode(
            JSON.object([("request_id", .string(rid)), ("action", "get_cart"), ("user_id", 1)]).bytes)
        #expect(rejection(outcome) == Rejection(requestId: nil, action: "get_cart", code: .invalidRequest, deadLetter: true))
    }

    @Test func nestingDeeperThan64IsDeadLetteredAsInvalidJSON() {
        let deep = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        let outcome = decode(#"{"action":"get_cart","user_id":1,"x":\#(deep)}"#, on: .cart)
        #expect(rejection(outcome) == Rejection(requestId: nil, action: nil, code: .invalidRequest, deadLetter: true))
        #expect(message(outcome)?.hasPrefix("the value is not valid JSON") == true)
        let ok = String(repeating: "[", count: 63) + String(repeating: "]", count: 63)
        #expect(decode(#"{"action":"get_cart","user_id":1,"x":\#(ok)}"#, on: .cart)
            == .request(Request(requestId: nil, command: .getCart(userId: 1))))
    }

    // MARK: Out of range: invalid_request, answered only

    @Test(arguments: [
        (RequestTopicKind.cart, #"{"action":"get_cart","user_id":0}"#),
        (.cart, #"{"action":"get_cart","user_id":-1}"#),
        (.cart, #"{"action":"get_cart","user_id":-9223372036854775808}"#),
        (.cart, #"{"action":"add_item","user_id":1,"product_id":0,"quantity":1}"#),
        (.cart, #"{"action":"add_item","user_id":1,"product_id":2,"quantity":0}"#),
        (.cart, #"{"action":"add_item","user_id":1,"product_id":2,"quantity":-1}"#),
        (.cart, #"{"action":"add_item","user_id":1,"product_id":2,"quantity":10001}"#),
        (.cart, #"{"action":"add_item","user_id":1,"product_id":2,"quantity":9223372036854775807}"#),
        (.cart, #"{"action":"add_item","user_id":1,"product_id":2,"quantity":-9223372036854775808}"#),
        (.cart, #"{"action":"update_item","user_id":1,"product_id":2,"quantity":-1}"#),
        (.cart, #"{"action":"update_item","user_id":1,"product_id":2,"quantity":10001}"#),
        (.cart, #"{"action":"remove_item","user_id":1,"product_id":-5}"#),
        (.order, #"{"action":"create_order","user_id":0}"#),
        (.order, #"{"action":"get_order","user_id":1,"order_id":0}"#),
        (.admin, #"{"action":"list_carts","limit":0}"#),
        (.admin, #"{"action":"list_carts","limit":1001}"#),
        (.admin, #"{"action":"list_carts","limit":-1}"#),
        (.admin, #"{"action":"list_carts","limit":9223372036854775807}"#),
        (.admin, #"{"action":"list_carts","after_cart_id":-1}"#),
        (.order, #"{"action":"list_orders","user_id":1,"limit":0}"#),
        (.order, #"{"action":"list_orders","user_id":1,"limit":1001}"#),
        (.order, #"{"action":"list_orders","user_id":1,"before_order_id":0}"#),
    ])
    func outOfRangeValuesAreAnsweredButNotDeadLettered(_ kind: RequestTopicKind, _ text: String) {
        let withId = "{\"request_id\":\"q\"," + text.dropFirst()
        guard case .string(let action)? = JSON.literal(text)["action"] else { Issue.record("bad fixture"); return }
        #expect(rejection(decode(withId, on: kind))
            == Rejection(requestId: "q", action: action, code: .invalidRequest, deadLetter: false))
    }

    @Test func messagesNameTheField() {
        #expect(message(decode(#"{"action":"add_item","user_id":1,"product_id":2,"quantity":0}"#, on: .cart))?.contains("quantity") == true)
        #expect(message(decode(#"{"action":"get_cart","user_id":"1"}"#, on: .cart))?.contains("user_id") == true)
        #expect(message(decode(#"{"action":"get_order","user_id":1}"#, on: .order))?.contains("order_id") == true)
    }
}

extension JSON {
    /// Parses a literal the test knows is valid.
    static func literal(_ text: String) -> JSON {
        do { return try JSON.parse(text) } catch {
            Issue.record("fixture is not JSON: \(error)")
            return .null
        }
    }
}
