-- Paid orders per day of payment and currency: revenue and average order value.
SELECT date_trunc('day', c.occurred_at) AS paid_day,
       r.data->>'currency' AS currency,
       count(*) AS orders,
       sum(CAST(r.data->>'total_cents' AS BIGINT)) AS revenue_cents,
       avg(CAST(r.data->>'total_cents' AS DOUBLE)) AS average_order_cents
FROM events c
JOIN events r ON r.aggregate_id = c.aggregate_id
WHERE c.type = 'order.confirmed' AND r.type = 'order.reserved'
GROUP BY 1, 2
ORDER BY 1, 2
