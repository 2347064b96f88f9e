import Testing

@testable import OrderCore

@Suite("Reply envelope and model JSON", .timeLimit(.minutes(1)))
struct ModelsTests {
    func keys(_ json: JSON) -> [String] {
        guard case .object(let fields) = json else { return [] }
        return fields.map(\.0)
    }

    @Test func emptyCartHasNullIdsAndZeroTotal() {
        let json = Cart.empty(userId: 7).json
        #expect(keys(json) == ["cart_id", "user_id", "created_at", "items", "total_price"])
        #expect(json.text == #"{"cart_id":null,"user_id":7,"created_at":null,"items":[],"total_price":"0.00"}"#)
    }

    @Test func cartJSONShape() throws {
        let cart = try Cart(cartId: 5, userId: 7, createdAt: "2024-01-02T03:04:05.000Z", items: [
            try CartItem(cartItemId: 11, productId: 100, productName: "Tea \"green\"", unitPrice: Money("2.5")!, quantity: 3),
            try CartItem(cartItemId: 12, productId: 101, productName: "Mug", unitPrice: Money("9.99")!, quantity: 1),
        ])
        let json = cart.json
        #expect(keys(json) == ["cart_id", "user_id", "created_at", "items", "total_price"])
        guard case .array(let items)? = json["items"] else { Issue.record("items missing"); return }
        #expect(items.count == 2)
        #expect(keys(items[0]) == ["cart_item_id", "product_id", "product_name", "unit_price", "quantity", "line_total"])
        #expect(items[0]["unit_price"] == .string("2.50"))
        #expect(items[0]["line_total"] == .string("7.50"))
        #expect(items[0]["quantity"] == .int(3))
        #expect(items[1]["line_total"] == .string("9.99"))
        #expect(json["total_price"] == .string("17.49"))
        #expect(json["cart_id"] == .int(5))
        #expect(json["created_at"] == .string("2024-01-02T03:04:05.000Z"))
        #expect(
            json.text
                == #"{"cart_id":5,"user_id":7,"created_at":"2024-01-02T03:04:05.000Z","items":[{"cart_item_id":11,"product_id":100,"product_name":"Tea \"green\"","unit_price":"2.50","quantity":3,"line_total":"7.50"},{"cart_item_id":12,"product_id":101,"product_name":"Mug","unit_price":"9.99","quantity":1,"line_total":"9.99"}],"total_price":"17.49"}"#
        )
    }

    @Test func orderJSONShape() throws {
        let order = Order(
            orderId: 9, userId: 7, status: .pending, totalPrice: Money("12.3")!, createdAt: "2024-01-02T03:04:05.000Z",
            items: [try OrderItem(orderItemId: 1, productId: 100, productName: "Tea", unitPrice: Money("4.10")!, quantity: 3)])
        let json = order.json
        #expect(keys(json) == ["order_id", "user_id", "status", "total_price", "created_at", "items"])
        #expect(json["status"] == .string("pending"))
        #expect(json["total_price"] == .string("12.30"))
        guard case .array(let items)? = json["items"] else { Issue.record("items missing"); return }
        #expect(keys(items[0]) == ["order_item_id", "product_id", "product_name", "unit_price", "quantity", "line_total"])
        #expect(items[0]["line_total"] == .string("12.30"))
        #expect(["pending", "confirmed", "rejected"].compactMap(OrderStatus.init(rawValue:)) == [.pending, .confirmed, .rejected])
    }

    @Test func okEnvelope() {
        let reply = Reply.ok(requestId: "r-1", action: "get_cart", body: [("cart", Cart.empty(userId: 1).json)])
        #expect(keys(reply) == ["request_id", "action", "status", "cart"])
        #expect(reply["status"] == .string("ok"))
        #expect(reply["request_id"] == .string("r-1"))
        let anonymous = Reply.ok(requestId: nil, action: "list_orders", body: [("orders", [])])
        #expect(anonymous.text == #"{"request_id":null,"action":"list_orders","status":"ok","orders":[]}"#)
    }

    @Test func errorEnvelope() {
        let err = ServiceError(.productNotFound, "unknown product id(s): 3", details: [("product_ids", [3])])
        let reply = Reply.error(requestId: "r-2", action: "add_item", err)
        #expect(
            reply.text
                == #"{"request_id":"r-2","action":"add_item","status":"error","error":{"code":"product_not_found","message":"unknown product id(s): 3","product_ids":[3]}}"#
        )
        let bare = Reply.error(requestId: nil, action: nil, .invalid("bad"))
        #expect(bare.text == #"{"request_id":null,"action":null,"status":"error","error":{"code":"invalid_request","message":"bad"}}"#)
    }

    @Test func stockLineJSON() {
        #expect(
            StockLine(productId: 4, requested: 5, available: 2).json.text == #"{"product_id":4,"requested":5,"available":2}"#)
    }

    @Test func errorCodesAreTheContractNames() {
        #expect(ErrorCode.allCases.map(\.rawValue) == [
            "invalid_request", "unknown_action", "invalid_reply_to", "forbidden", "product_not_found", "item_not_found",
            "cart_empty", "cart_full", "insufficient_stock", "order_not_found", "upstream_timeout", "internal_error",
        ])
        #expect(ErrorCode.allCases.filter(\.isTransient) == [.upstreamTimeout, .internalError])
    }

    @Test func serviceErrorEqualityIncludesDetails() {
        #expect(ServiceError(.forbidden, "x") == ServiceError(.forbidden, "x"))
        #expect(ServiceError(.forbidden, "x") != ServiceError(.forbidden, "y"))
        #expect(ServiceError(.productNotFound, "x", details: [("product_ids", [1])]) != ServiceError(.productNotFound, "x", details: [("product_ids", [2])]))
    }

    @Test func commandsKnowTheirActionUserAndReadOnlyness() {
        let all: [Command] = [
            .addItem(userId: 1, productId: 2, quantity: 3), .getCart(userId: 1), .updateItem(userId: 1, productId: 2, quantity: 0),
            .removeItem(userId: 1, productId: 2), .createOrder(userId: 1), .listOrders(userId: 1), .getOrder(userId: 1, orderId: 2),
            .listCarts(limit: 100, afterCartId: nil),
        ]
        #expect(all.map(\.action) == [
            "add_item", "get_cart", "update_item", "remove_item", "create_order", "list_orders", "get_order", "list_carts",
        ])
        #expect(all.map(\.userId) == [1, 1, 1, 1, 1, 1, 1, nil])
        #expect(all.filter(\.isReadOnly).map(\.action) == ["get_cart", "list_orders", "get_order", "list_carts"])
        let union = RequestTopicKind.allCases.reduce(into: Set<String>()) { $0.formUnion($1.actions) }
        #expect(union == Set(all.map(\.action)))
    }
}
