-- title: Key figures
-- description: Orders paid, revenue, average order value and refunds per currency, the payment success rate and the products low on stock, over a period.
-- param since date = 1970-01-01: first day
-- param until date = 9999-12-31: last day
WITH sales AS (
    SELECT currency, sum(orders) AS orders, sum(revenue_cents) AS revenue_cents,
           sum(refunded_cents) AS refunded_cents
    FROM sales_daily
    WHERE day BETWEEN CAST($since AS DATE) AND CAST($until AS DATE)
    GROUP BY currency
),
charges AS (
    SELECT sum(succeeded) AS succeeded, sum(succeeded) + sum(declined) + sum(fraudulent) AS decided
    FROM payment_success
    WHERE day BETWEEN CAST($since AS DATE) AND CAST($until AS DATE)
)
SELECT kpi, currency, value FROM (
    SELECT 'orders_paid' AS kpi, currency, CAST(orders AS DOUBLE) AS value FROM sales
    UNION ALL
    SELECT 'revenue_cents', currency, CAST(revenue_cents AS DOUBLE) FROM sales
    UNION ALL
    SELECT 'average_order_cents', currency, CAST(revenue_cents AS DOUBLE) / nullif(orders, 0) FROM sales
    UNION ALL
    SELECT 'refunded_cents', currency, CAST(refunded_cents AS DOUBLE) FROM sales
    UNION ALL
    SELECT 'payment_success_rate', CAST(NULL AS VARCHAR), CAST(succeeded AS DOUBLE) / nullif(decided, 0) FROM charges
    UNION ALL
    SELECT 'low_stock_products', CAST(NULL AS VARCHAR), CAST(count(*) AS DOUBLE) FROM low_stock
)
ORDER BY kpi, currency
