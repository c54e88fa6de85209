-- title: Top customers
-- description: The customers who paid the most (captured, net of refunds) for orders placed in the period, per currency.
-- param since date = 1970-01-01: first day (the order was placed)
-- param until date = 9999-12-31: last day
-- param limit int = 10: customers per currency
SELECT user_id, email, name, currency, orders_paid, net_paid_cents, rank
FROM (
    SELECT u.id AS user_id, u.email, u.name, p.currency,
           count(*) AS orders_paid,
           sum(p.captured_cents - p.refunded_cents) AS net_paid_cents,
           row_number() OVER (
               PARTITION BY p.currency
               ORDER BY sum(p.captured_cents - p.refunded_cents) DESC, u.id
           ) AS rank
    FROM payments p
    JOIN orders o ON o.id = p.order_id
    JOIN users u ON u.id = o.user_id
    WHERE p.captured_cents > 0
      AND CAST(o.created_at AS DATE) BETWEEN CAST($since AS DATE) AND CAST($until AS DATE)
    GROUP BY u.id, u.email, u.name, p.currency
)
WHERE rank <= $limit
ORDER BY currency, rank
