/// CONTRACT section 3 objects, and their JSON form.

/// A cart or order line: the two differ only in the name of their id.
private func lineJSON(idKey: String, id: Int64, productId: Int64, name: String, price: Money, quantity: Int, total: Money) -> JSON {
    .object([
        (idKey, .int(id)), ("product_id", .int(productId)), ("product_name", .string(name)), ("unit_price", price.json),
        ("quantity", .int(Int64(quantity))), ("line_total", total.json),
    ])
}
/// A cart line; its line total is computed once and is within `Money.max`.
public struct CartItem: Sendable, Equatable {
    public let cartItemId: Int64
    public let productId: Int64
    public let productName: String
    public let unitPrice: Money
    public let quantity: Int
    public let lineTotal: Money

    public init(cartItemId: Int64, productId: Int64, productName: String, unitPrice: Money, quantity: Int) throws(MoneyOutOfRange) {
        guard let total = unitPrice.times(quantity) else { throw MoneyOutOfRange() }
        self.cartItemId = cartItemId
        self.productId = productId
        self.productName = productName
        self.unitPrice = unitPrice
        self.quantity = quantity
        self.lineTotal = total
    }

    public var json: JSON {
        lineJSON(idKey: "cart_item_id", id: cartItemId, productId: productId, name: productName, price: unitPrice, quantity: quantity, total: lineTotal)
    }
}

/// A cart; its total is computed once and is within `Money.max`.
public struct Cart: Sendable, Equatable {
    /// nil for a user who never had a cart.
    public let cartId: Int64?
    public let userId: Int64
    public let createdAt: String?
    /// By cart_item_id ascending.
    public let items: [CartItem]
    public let totalPrice: Money

    public init(cartId: Int64?, userId: Int64, createdAt: String?, items: [CartItem]) throws(MoneyOutOfRange) {
        guard let total = Money.sum(items.lazy.map(\.lineTotal)) else { throw MoneyOutOfRange() }
        self.cartId = cartId
        self.userId = userId
        self.createdAt = createdAt
        self.items = items
        self.totalPrice = total
    }

    private init(emptyFor userId: Int64) {
        cartId = nil
        self.userId = userId
        createdAt = nil
        items = []
        totalPrice = .zero
    }

    public static func empty(userId: Int64) -> Cart { Cart(emptyFor: userId) }

    public var json: JSON {
        .object([
            ("cart_id", .optional(cartId)), ("user_id", .int(userId)), ("created_at", .optional(createdAt)),
            ("items", .array(items.map(\.json))), ("total_price", totalPrice.json),
        ])
    }
}

public enum OrderStatus: String, Sendable {
    case pending, confirmed, rejected
}

/// An order line; its line total is computed once and is within `Money.max`.
public struct OrderItem: Sendable, Equatable {
    public let orderItemId: Int64
    public let productId: Int64
    public let productName: String
    public let unitPrice: Money
    public let quantity: Int
    public let lineTotal: Money

    public init(orderItemId: Int64, productId: Int64, productName: String, unitPrice: Money, quantity: Int) throws(MoneyOutOfRange) {
        guard let total = unitPrice.times(quantity) else { throw MoneyOutOfRange() }
        self.orderItemId = orderItemId
        self.productId = productId
        self.productName = productName
        self.unitPrice = unitPrice
        self.quantity = quantity
        self.lineTotal = total
    }

    public var json: JSON {
        lineJSON(idKey: "order_item_id", id: orderItemId, productId: productId, name: productName, price: unitPrice, quantity: quantity, total: lineTotal)
    }
}

public struct Order: Sendable, Equatable {
    public var orderId: Int64
    public var userId: Int64
    public var status: OrderStatus
    public var totalPrice: Money
    public var createdAt: String
    public var items: [OrderItem]

    public init(orderId: Int64, userId: Int64, status: OrderStatus, totalPrice: Money, createdAt: String, items: [OrderItem]) {
        self.orderId = orderId
        self.userId = userId
        self.status = status
        self.totalPrice = totalPrice
        self.createdAt = createdAt
        self.items = items
    }

    public var json: JSON {
        .object([
            ("order_id", .int(orderId)), ("user_id", .int(userId)), ("status", .string(status.rawValue)),
            ("total_price", totalPrice.json), ("created_at", .string(createdAt)),
            ("items", .array(items.map(\.json))),
        ])
    }
}

/// Product details as the Product Service reports them, checked where they enter: a positive
/// id, a usable name (see `Product.nameProblem`) and a price within `Money.max` (zero allowed).
public struct Product: Sendable, Equatable {
    public let productId: Int64
    public let name: String
    public let price: Money

    /// A product name holds 1…`maxNameBytes` bytes of UTF-8 (Swift strings are valid UTF-8) and
    /// no NUL, which PostgreSQL text cannot store. 512 bytes keep a full cart (100 lines) far
    /// below the maximum record size.
    public static let maxNameBytes = 512

    /// Why `name` cannot be a product name, or nil when it can.
    public static func nameProblem(_ name: String) -> String? {
        let utf8 = name.utf8
        if utf8.isEmpty { return "empty name" }
        if utf8.count > maxNameBytes { return "name longer than \(maxNameBytes) bytes" }
        if utf8.contains(0) { return "name contains NUL" }
        return nil
    }

    /// nil when the id is below 1 or the name is unusable.
    public init?(productId: Int64, name: String, price: Money) {
        guard productId >= 1, Self.nameProblem(name) == nil else { return nil }
        self.productId = productId
        self.name = name
        self.price = price
    }
}

/// One line of an availability answer.
public struct StockLine: Sendable, Equatable {
    public var productId: Int64
    public var requested: Int
    public var available: Int
    public init(productId: Int64, requested: Int, available: Int) {
        self.productId = productId
        self.requested = requested
        self.available = available
    }
    public var json: JSON {
        .object([("product_id", .int(productId)), ("requested", .int(Int64(requested))), ("available", .int(Int64(available)))])
    }
}

/// The response envelope (CONTRACT section 2).
public enum Reply {
    public static func ok(requestId: String?, action: String, body: [(String, JSON)]) -> JSON {
        .object([("request_id", .optional(requestId)), ("action", .string(action)), ("status", "ok")] + body)
    }

    public static func error(requestId: String?, action: String?, _ error: ServiceError) -> JSON {
        .object([
            ("request_id", .optional(requestId)), ("action", .optional(action)), ("status", "error"),
            ("error", error.json),
        ])
    }
}
