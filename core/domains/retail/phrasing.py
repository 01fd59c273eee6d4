"""How the retail service words a change it proposes: the customer's own terms, with what they need to decide.

`{argument}` is the action's argument as the customer knows it (a product by its name, an address by its
label, never an internal id they did not give); any other `{field}` is read from the task's earlier results.
"""

CHANGES = {
    "cancel_pending_order": "cancel order {order_number}, and the {total} you paid goes back to your original "
                            "payment method",
    "modify_pending_order_address": "send order {order_number} to your {address_id} address instead",
    "modify_pending_order_item": "change the {sku} on order {order_number} to a quantity of {quantity}",
    "return_delivered_item": "start a return of {quantity} of the {sku} from order {order_number} (reason: {reason}), "
                             "refunded to your original payment method",
    "exchange_delivered_item": "exchange the {sku} from order {order_number} for the {new_sku}, which costs "
                               "{price} and ships to the same address",
}

# report label -> the ways the service states that value ({v}), a clause each
FACTS = {
    "price": ("the price is {v}", "it costs {v}", "it sells for {v}", "it's priced at {v}", "it goes for {v}",
              "we list it at {v}"),
    "stock": ("we have {v} in stock", "the stock is {v}", "the stock count is {v}", "{v} are in stock",
              "our warehouse holds {v}", "the inventory shows {v} units"),
    "order status": ("the order is {v}", "its status is {v}", "the order status is {v}", "it's currently {v}",
                     "your order shows as {v}", "the system has it as {v}"),
    "order total": ("the total is {v}", "it came to {v} in total", "the order total is {v}", "you paid {v} for it",
                    "its total comes to {v}", "the amount charged is {v}"),
    "number of orders": ("the number of orders is {v}", "orders on your account: {v}", "I count {v} in total"),
    "order numbers": ("their numbers are {v}", "the order numbers are {v}", "they are {v}"),
    "address labels": ("you have these addresses on file: {v}", "the addresses on file are labelled {v}",
                       "your saved addresses are {v}"),
    "new shipping street": ("it now ships to {v}", "the new shipping street is {v}", "the delivery address is now {v}"),
    "new order total": ("the new total is {v}", "the order now comes to {v}", "your new order total is {v}"),
    "refund amount": ("the refund is {v}", "{v} will be refunded", "you'll get {v} back"),
    "return number": ("the return number is {v}", "your return reference is {v}", "the return is registered as {v}"),
    "new order number": ("the new order number is {v}", "the replacement ships as order {v}", "your new order is {v}"),
    "order date": ("the order was placed on {v}", "it was ordered on {v}", "the order date is {v}"),
}
