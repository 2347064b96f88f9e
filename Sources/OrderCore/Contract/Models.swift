/// CONTRACT section 3 objects, and their JSON form.

/// A cart or order line: the two differ only in the name of their id.
private func lineJSON(idKey: String, id: Int64, productId: Int64, name: String, price: Money, quantity: Int) -> JSON {
    .object([
        (idKey, .int(id)), ("product_id", .int(productId)), ("product_name", .string(name)), ("unit_price", price.json),
        ("quantity", .int(Int64(quantity))), ("line_total", (price * quantity).json),
    ])
}
public struct CartItem: Sendable, Equatable {
    public var cartItemId: Int64
    public var productId: Int64
    public var productName: String
    public var unitPrice: Money
    public var quantity: Int

    public init(cartItemId: Int64, productId: Int64, productName: String, unitPrice: Money, quantity: Int) {
        self.cartItemId = cartItemId
        self.productId = productId
        self.productName = productName
        self.unitPrice = unitPrice
        self.quantity = quantity
    }

    public var lineTotal: Money { unitPrice * quantity }

    public var json: JSON {
        lineJSON(idKey: "cart_item_id", id: cartItemId, productId: productId, name: productName, price: unitPrice, quantity: quantity)
    }
}

public struct Cart: Sendable, Equatable {
    /// nil for a user who never had a cart.
    public var cartId: Int64?
    public var userId: Int64
    public var createdAt: String?
    /// By cart_item_id ascending.
    public var items: [CartItem]

    public init(cartId: Int64?, userId: Int64, createdAt: String?, items: [CartItem]) {
        self.cartId = cartId
        self.userId = userId
        self.createdAt = createdAt
        self.items = items
    }

    public static func empty(userId: Int64) -> Cart { Cart(cartId: nil, userId: userId, createdAt: nil, items: []) }

    public var totalPrice: Money { items.reduce(.zero) { $0 + $1.lineTotal } }

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

public struct OrderItem: Sendable, Equatable {
    public var orderItemId: Int64
    public var productId: Int64
    public var productName: String
    public var unitPrice: Money
    public var quantity: Int

    public init(orderItemId: Int64, productId: Int64, productName: String, unitPrice: Money, quantity: Int) {
        self.orderItemId = orderItemId
        self.productId = productId
        self.productName = productName
        self.unitPrice = unitPrice
        self.quantity = quantity
    }

    public var lineTotal: Money { unitPrice * quantity }

    public var json: JSON {
        lineJSON(idKey: "order_item_id", id: orderItemId, productId: productId, name: productName, price: unitPrice, quantity: quantity)
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

/// Product details as the Product Service reports them.
public struct Product: Sendable, Equatable {
    public var productId: Int64
    public var name: String
    public var price: Money
    public init(productId: Int64, name: String, price: Money) {
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
