//! The report's two charts, drawn with the `plotters` crate into SVG text
//! that the HTML report embeds inline (so the file works offline): devices
//! authorised vs certified per order, and refusals over time.

use plotters::prelude::*;

use super::super::report::{OrderSummary, Refusals};
use super::when;

const AUTHORISED: RGBColor = RGBColor(0x4c, 0x72, 0xb0);
const CERTIFIED: RGBColor = RGBColor(0x55, 0xa8, 0x68);
const OVER: RGBColor = RGBColor(0xc4, 0x4e, 0x52);
const DUPLICATE: RGBColor = RGBColor(0xdd, 0x84, 0x52);
const COUNTERFEIT: RGBColor = RGBColor(0x81, 0x72, 0xb3);
const QUOTA: RGBColor = RGBColor(0x93, 0x78, 0x60);

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("chart: {e:?}")
}

/// Grouped bars: authorised and certified devices of each order; the
/// certified bar turns red where it exceeds the authorised quantity.
pub(super) fn orders_chart(orders: &[OrderSummary]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let n = i32::try_from(orders.len().max(1)).unwrap_or(i32::MAX / 4);
        let width = u32::try_from((140 + 110 * orders.len()).clamp(520, 1400)).unwrap_or(1400);
        let root = SVGBackend::with_string(&mut svg, (width, 380)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let max = orders
            .iter()
            .map(|o| o.authorised.unwrap_or(0).max(o.certified))
            .max()
            .unwrap_or(1)
            .max(1);
        let labels: Vec<String> = orders.iter().map(|o| o.order_id.clone()).collect();
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Devices authorised vs certified, per order",
                ("sans-serif", 18),
            )
            .margin(14)
            .x_label_area_size(42)
            .y_label_area_size(60)
            .build_cartesian_2d(0i32..n * 3, 0u64..max + max / 3 + 1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .x_labels(usize::try_from(n * 3).unwrap_or(3))
            .x_label_formatter(&|x| {
                if x.rem_euclid(3) == 1 {
                    labels
                        .get(usize::try_from(x / 3).unwrap_or(usize::MAX))
                        .cloned()
                        .unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc("devices")
            .draw()
            .map_err(err)?;
        chart
            .draw_series(orders.iter().enumerate().map(|(i, o)| {
                let x = i32::try_from(i).unwrap_or(0) * 3;
                Rectangle::new(
                    [(x, 0), (x + 1, o.authorised.unwrap_or(0))],
                    AUTHORISED.filled(),
                )
            }))
            .map_err(err)?
            .label("authorised")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], AUTHORISED.filled()));
        chart
            .draw_series(orders.iter().enumerate().map(|(i, o)| {
                let x = i32::try_from(i).unwrap_or(0) * 3 + 1;
                let over = o.authorised.is_none_or(|a| o.certified > a);
                let colour = if over { OVER } else { CERTIFIED };
                Rectangle::new([(x, 0), (x + 1, o.certified)], colour.filled())
            }))
            .map_err(err)?
            .label("certified (red: beyond authorised)")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], CERTIFIED.filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Stacked bars: duplicate, counterfeit and quota refusals per time bucket.
pub(super) fn refusals_chart(refusals: &Refusals) -> Result<String, String> {
    let mut svg = String::new();
    {
        let buckets = &refusals.timeline;
        let n = i32::try_from(buckets.len().max(1)).unwrap_or(48);
        let root = SVGBackend::with_string(&mut svg, (900, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let max = buckets
            .iter()
            .map(|b| b.duplicate + b.counterfeit + b.quota)
            .max()
            .unwrap_or(1)
            .max(1);
        let hours = refusals.bucket_ms / 3_600_000;
        let caption = format!("Refused attempts over time ({hours} h per bar)");
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 18))
            .margin(14)
            .x_label_area_size(42)
            .y_label_area_size(60)
            .build_cartesian_2d(0i32..n, 0u64..max + max / 3 + 1)
            .map_err(err)?;
        let starts: Vec<i64> = buckets.iter().map(|b| b.start_ms).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .x_labels(6)
            .x_label_formatter(&|x| {
                starts
                    .get(usize::try_from(*x).unwrap_or(usize::MAX))
                    .map(|ms| when(*ms).chars().take(16).collect())
                    .unwrap_or_default()
            })
            .y_desc("refusals")
            .draw()
            .map_err(err)?;
        let stacks: [(&str, RGBColor); 3] = [
            ("duplicate", DUPLICATE),
            ("counterfeit", COUNTERFEIT),
            ("quota", QUOTA),
        ];
        for (layer, (name, colour)) in stacks.into_iter().enumerate() {
            chart
                .draw_series(buckets.iter().enumerate().map(|(i, b)| {
                    let x = i32::try_from(i).unwrap_or(0);
                    let values = [b.duplicate, b.counterfeit, b.quota];
                    let below: u64 = values[..layer].iter().sum();
                    Rectangle::new(
                        [(x, below), (x + 1, below + values[layer])],
                        colour.filled(),
                    )
                }))
                .map_err(err)?
                .label(name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}
