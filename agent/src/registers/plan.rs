//! The read plan: a device's points grouped into the fewest Modbus requests.
//!
//! Each request costs a full round trip (and on RS-485 at 9600 baud about 10 ms
//! of line time plus the device's turnaround), so adjacent points are read
//! together, and small holes are read over when that saves a request. A hole is
//! only bridged up to `max_gap` items: some devices answer "illegal data
//! address" (exception 02) for unmapped registers inside a range, and for those
//! the installer sets `max_gap = 0`.

use super::{Function, PointSpec};

/// Where a point's data sits inside a [`PlannedRead`]'s response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointSlot {
    /// Index of the point in the slice given to [`plan_reads`].
    pub point: usize,
    /// Offset of the point's first register/bit from the request's start.
    pub offset: u16,
}

/// One read request and the points it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRead {
    /// Modbus table (selects FC01/02/03/04).
    pub function: Function,
    /// First register/bit.
    pub address: u16,
    /// Registers or bits to read; never more than [`Function::max_quantity`].
    pub count: u16,
    /// The points decoded from this response.
    pub slots: Vec<PointSlot>,
}

/// Group `points` into requests: same table, holes of at most `max_gap`
/// items, and no more than 125 registers / 2000 bits per request
/// (Modbus Application Protocol V1.1b3 §6.1–6.4). Requests come out ordered by
/// table, then address.
pub fn plan_reads(points: &[PointSpec], max_gap: u16) -> Vec<PlannedRead> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| (points[i].function, points[i].address.0));

    let mut plan: Vec<PlannedRead> = Vec::new();
    for i in order {
        let p = &points[i];
        let start = u32::from(p.address.0);
        let end = start + u32::from(p.width()); // exclusive
        if let Some(last) = plan.last_mut() {
            let last_start = u32::from(last.address);
            let last_end = last_start + u32::from(last.count);
            let fits_gap = start <= last_end + u32::from(max_gap);
            let new_end = end.max(last_end);
            let fits_size = new_end - last_start <= u32::from(p.function.max_quantity());
            if last.function == p.function && fits_gap && fits_size {
                last.count = (new_end - last_start) as u16;
                last.slots.push(PointSlot {
                    point: i,
                    offset: (start - last_start) as u16,
                });
                continue;
            }
        }
        plan.push(PlannedRead {
            function: p.function,
            address: p.address.0,
            count: p.width(),
            slots: vec![PointSlot {
                point: i,
                offset: 0,
            }],
        });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registers::{DataType, RegisterAddress, WordOrder};

    fn p(function: Function, address: u16, data_type: DataType) -> PointSpec {
        PointSpec {
            function,
            address: RegisterAddress(address),
            data_type,
            bit: None,
            word_order: WordOrder::HighFirst,
            scale: 1.0,
            offset: 0.0,
            write_function: crate::registers::WriteFunction::Single,
        }
    }

    #[test]
    fn adjacent_registers_become_one_request() {
        let pts = [
            p(Function::Holding, 10, DataType::I16),
            p(Function::Holding, 11, DataType::I32),
        ];
        let plan = plan_reads(&pts, 0);
        assert_eq!(plan.len(), 1);
        assert_eq!((plan[0].address, plan[0].count), (10, 3));
        assert_eq!(
            plan[0].slots[1],
            PointSlot {
                point: 1,
                offset: 1
            }
        );
    }

    #[test]
    fn a_hole_within_max_gap_is_read_over() {
        let pts = [
            p(Function::Holding, 18, DataType::I16),
            p(Function::Holding, 26, DataType::I16),
        ];
        assert_eq!(plan_reads(&pts, 7).len(), 1);
        assert_eq!(plan_reads(&pts, 6).len(), 2);
    }

    #[test]
    fn different_tables_are_never_merged() {
        let pts = [
            p(Function::Holding, 0, DataType::U16),
            p(Function::Input, 1, DataType::U16),
            p(Function::Coil, 2, DataType::Bool),
            p(Function::Discrete, 3, DataType::Bool),
        ];
        let plan = plan_reads(&pts, 100);
        let fns: Vec<_> = plan.iter().map(|r| r.function).collect();
        assert_eq!(
            fns,
            vec![
                Function::Holding,
                Function::Input,
                Function::Coil,
                Function::Discrete
            ]
        );
    }

    #[test]
    fn register_requests_are_split_at_125() {
        let pts: Vec<_> = (0..200)
            .map(|a| p(Function::Holding, a, DataType::U16))
            .collect();
        let plan = plan_reads(&pts, 0);
        assert_eq!(
            plan.iter().map(|r| r.count).collect::<Vec<_>>(),
            vec![125, 75]
        );
    }

    #[test]
    fn a_32_bit_point_is_never_split_across_requests() {
        let mut pts: Vec<_> = (0..124)
            .map(|a| p(Function::Holding, a, DataType::U16))
            .collect();
        pts.push(p(Function::Holding, 124, DataType::U32));
        let plan = plan_reads(&pts, 0);
        assert_eq!(plan.len(), 2);
        assert_eq!((plan[1].address, plan[1].count), (124, 2));
    }

    #[test]
    fn coil_requests_are_split_at_2000_bits() {
        let pts = [
            p(Function::Coil, 0, DataType::Bool),
            p(Function::Coil, 2000, DataType::Bool),
        ];
        assert_eq!(plan_reads(&pts, u16::MAX).len(), 2);
        let pts = [
            p(Function::Coil, 0, DataType::Bool),
            p(Function::Coil, 1999, DataType::Bool),
        ];
        assert_eq!(plan_reads(&pts, u16::MAX).len(), 1);
    }

    #[test]
    fn several_bits_of_one_status_word_share_its_register() {
        let pts: Vec<_> = (0..4)
            .map(|_| p(Function::Holding, 45, DataType::Bool))
            .collect();
        let plan = plan_reads(&pts, 0);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].count, 1);
        assert!(plan[0].slots.iter().all(|s| s.offset == 0));
    }

    #[test]
    fn every_point_lands_in_exactly_one_request() {
        let pts: Vec<_> = [40u16, 3, 17, 18, 300, 5]
            .iter()
            .map(|&a| p(Function::Input, a, DataType::U16))
            .collect();
        let plan = plan_reads(&pts, 10);
        let mut seen: Vec<usize> = plan
            .iter()
            .flat_map(|r| r.slots.iter().map(|s| s.point))
            .collect();
        seen.sort();
        assert_eq!(seen, vec![0, 1, 2, 3, 4, 5]);
    }
}
