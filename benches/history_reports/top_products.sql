-- The ten products with the most units in paid orders.
SELECT r.data->>'product_id' AS product_id,
       sum(CAST(r.data->>'quantity' AS BIGINT)) AS units
FROM events r
JOIN events c ON c.aggregate_id = (r.data->>'order_id')
WHERE r.type = 'inventory.reserved' AND c.type = 'order.confirmed'
GROUP BY 1
ORDER BY units DESC, product_id
LIMIT 10
