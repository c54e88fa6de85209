-- title: Inventory turnover
-- description: Units shipped over the average stock on hand, per product, from its first stock movement to today; highest turnover first.
SELECT t.product_id, p.sku, p.name, t.units_shipped, t.days, t.average_on_hand, t.turnover
FROM inventory_turnover t
LEFT JOIN products p ON p.id = t.product_id
ORDER BY t.turnover DESC NULLS LAST, t.product_id
