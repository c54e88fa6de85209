-- title: Low stock
-- description: Products at or below their reorder point, with recent sales and the days left before they run out at that pace.
SELECT l.product_id, p.sku, p.name, l.available, l.reorder_point, f.units_sold_7d,
       f.daily_velocity, f.days_until_stockout
FROM low_stock l
JOIN products p ON p.id = l.product_id
LEFT JOIN stock_forecast f ON f.product_id = l.product_id
ORDER BY f.days_until_stockout NULLS LAST, l.available, l.product_id
