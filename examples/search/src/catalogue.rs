//! The product catalogue, generated deterministically (same seed, same products) so the
//! index can be built at compile time and tests can recompute any answer.

/// Products generated.
pub const PRODUCTS: usize = 12_000;

pub struct Product {
    pub title: String,
    pub brand: &'static str,
    pub category: &'static str,
    /// Price in paise.
    pub price: u32,
    /// Rating in tenths of a star, 10..=50.
    pub rating: u8,
}

struct Category {
    name: &'static str,
    brands: &'static [&'static str],
    nouns: &'static [&'static str],
    series: &'static [&'static str],
    variants: &'static [&'static str],
    /// Price range in rupees.
    price: (u32, u32),
}

const COLOURS: &[&str] = &[
    "Black", "White", "Blue", "Red", "Green", "Grey", "Silver", "Gold", "Pink", "Navy", "Maroon",
    "Beige",
];

const CATEGORIES: &[Category] = &[
    Category {
        name: "Mobiles",
        brands: &[
            "Samsung", "Xiaomi", "Realme", "OnePlus", "Vivo", "Oppo", "Apple", "Motorola",
        ],
        nouns: &["Smartphone", "Phone", "Mobile"],
        series: &[
            "Galaxy", "Redmi", "Narzo", "Nord", "Edge", "Note", "Pro", "Ultra", "Lite",
        ],
        variants: &[
            "5G 128GB", "4G 64GB", "5G 256GB", "8GB RAM", "12GB RAM", "Dual SIM",
        ],
        price: (6_999, 149_999),
    },
    Category {
        name: "Laptops",
        brands: &["Lenovo", "HP", "Dell", "Asus", "Acer", "Apple", "MSI"],
        nouns: &["Laptop", "Notebook", "Ultrabook", "Chromebook"],
        series: &[
            "IdeaPad", "ThinkPad", "Pavilion", "Inspiron", "Vivobook", "Aspire", "Zenbook",
        ],
        variants: &[
            "Core i5 16GB",
            "Core i7 32GB",
            "Ryzen 5 8GB",
            "Ryzen 7 16GB",
            "512GB SSD",
        ],
        price: (24_999, 249_999),
    },
    Category {
        name: "Headphones",
        brands: &[
            "boAt",
            "Sony",
            "JBL",
            "Noise",
            "Sennheiser",
            "Boult",
            "Skullcandy",
        ],
        nouns: &["Headphones", "Earbuds", "Earphones", "Headset", "Neckband"],
        series: &[
            "Rockerz",
            "Airdopes",
            "Tune",
            "Buds",
            "Momentum",
            "Crusher",
            "Bassheads",
        ],
        variants: &[
            "Wireless",
            "Bluetooth",
            "Noise Cancelling",
            "Wired",
            "Gaming",
        ],
        price: (499, 34_999),
    },
    Category {
        name: "Televisions",
        brands: &["Samsung", "LG", "Sony", "TCL", "Mi", "Panasonic", "Hisense"],
        nouns: &["Television", "TV", "Smart TV"],
        series: &["Crystal", "OLED", "QLED", "Bravia", "NanoCell", "Neo"],
        variants: &[
            "32 inch HD",
            "43 inch 4K",
            "55 inch 4K",
            "65 inch 4K",
            "Android",
        ],
        price: (11_999, 299_999),
    },
    Category {
        name: "Cameras",
        brands: &["Canon", "Nikon", "Sony", "Fujifilm", "GoPro", "Panasonic"],
        nouns: &["Camera", "DSLR", "Mirrorless Camera", "Action Camera"],
        series: &["EOS", "Alpha", "Coolpix", "Hero", "Lumix", "X-T"],
        variants: &["24MP", "Kit Lens", "Body Only", "4K Video", "Vlogging"],
        price: (14_999, 299_999),
    },
    Category {
        name: "Watches",
        brands: &[
            "Titan", "Fastrack", "Casio", "Fossil", "Noise", "Amazfit", "Garmin",
        ],
        nouns: &["Watch", "Smartwatch", "Analog Watch", "Digital Watch"],
        series: &[
            "Edge",
            "Reflex",
            "G-Shock",
            "Gen",
            "Bip",
            "Forerunner",
            "ColorFit",
        ],
        variants: &[
            "Leather Strap",
            "Steel Strap",
            "AMOLED",
            "GPS",
            "Waterproof",
        ],
        price: (999, 89_999),
    },
    Category {
        name: "Shoes",
        brands: &[
            "Bata", "Nike", "Adidas", "Puma", "Woodland", "Campus", "Skechers", "Red Tape",
        ],
        nouns: &[
            "Shoes",
            "Sneakers",
            "Running Shoes",
            "Sandals",
            "Boots",
            "Loafers",
        ],
        series: &[
            "Air",
            "Ultraboost",
            "Softride",
            "Go Walk",
            "Classic",
            "Trail",
        ],
        variants: &["Men", "Women", "Size 8", "Size 9", "Size 10", "Lightweight"],
        price: (499, 19_999),
    },
    Category {
        name: "Shirts",
        brands: &[
            "Allen Solly",
            "Van Heusen",
            "Peter England",
            "Louis Philippe",
            "Levis",
            "Raymond",
        ],
        nouns: &["Shirt", "T-Shirt", "Polo", "Kurta"],
        series: &[
            "Slim Fit",
            "Regular Fit",
            "Oxford",
            "Linen",
            "Cotton",
            "Formal",
            "Casual",
        ],
        variants: &[
            "Full Sleeve",
            "Half Sleeve",
            "Checked",
            "Striped",
            "Solid",
            "Printed",
        ],
        price: (399, 4_999),
    },
    Category {
        name: "Kitchen",
        brands: &[
            "Prestige",
            "Pigeon",
            "Hawkins",
            "Philips",
            "Bajaj",
            "Butterfly",
            "Borosil",
        ],
        nouns: &[
            "Pressure Cooker",
            "Mixer Grinder",
            "Kettle",
            "Induction Cooktop",
            "Tawa",
            "Kadai",
        ],
        series: &[
            "Omega",
            "Deluxe",
            "Classic",
            "Popular",
            "Smart",
            "Nakshatra",
        ],
        variants: &[
            "3 Litre",
            "5 Litre",
            "750 Watt",
            "1200 Watt",
            "Non Stick",
            "Stainless Steel",
        ],
        price: (299, 14_999),
    },
    Category {
        name: "Books",
        brands: &[
            "Penguin",
            "HarperCollins",
            "Rupa",
            "Westland",
            "Scholastic",
            "Arihant",
        ],
        nouns: &[
            "Novel",
            "Guide",
            "Handbook",
            "Anthology",
            "Biography",
            "Cookbook",
        ],
        series: &[
            "Classic",
            "Bestseller",
            "Illustrated",
            "Collector",
            "Pocket",
        ],
        variants: &[
            "Paperback",
            "Hardcover",
            "English",
            "Hindi",
            "Second Edition",
        ],
        price: (99, 2_499),
    },
    Category {
        name: "Toys",
        brands: &[
            "Funskool",
            "Lego",
            "Hasbro",
            "Mattel",
            "Hot Wheels",
            "Fisher Price",
        ],
        nouns: &[
            "Building Set",
            "Board Game",
            "Puzzle",
            "Action Figure",
            "Remote Car",
            "Doll",
        ],
        series: &[
            "City", "Technic", "Monopoly", "Scrabble", "Barbie", "Junior",
        ],
        variants: &[
            "Ages 3+",
            "Ages 6+",
            "Ages 12+",
            "500 Pieces",
            "Family Edition",
        ],
        price: (199, 24_999),
    },
    Category {
        name: "Furniture",
        brands: &[
            "Godrej Interio",
            "Nilkamal",
            "Wakefit",
            "Durian",
            "Urban Ladder",
            "Sleepwell",
        ],
        nouns: &[
            "Sofa",
            "Office Chair",
            "Study Table",
            "Bookshelf",
            "Mattress",
            "Wardrobe",
            "Bed",
        ],
        series: &["Ergo", "Comfort", "Ortho", "Modular", "Compact", "Royal"],
        variants: &[
            "Engineered Wood",
            "Sheesham Wood",
            "Fabric",
            "Leatherette",
            "Queen Size",
        ],
        price: (1_999, 149_999),
    },
];

/// A small, fixed pseudo-random generator (xorshift64*), so the catalogue never depends
/// on a crate's algorithm changing.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

/// The catalogue: always the same `PRODUCTS` products in the same order.
pub fn generate() -> Vec<Product> {
    let mut rng = Rng(0x00da_bba5_eed0_0001);
    (0..PRODUCTS)
        .map(|_| {
            let c = &CATEGORIES[rng.below(CATEGORIES.len())];
            let brand = rng.pick(c.brands);
            let series = rng.pick(c.series);
            let model = 100 + rng.below(900);
            let noun = rng.pick(c.nouns);
            let variant = rng.pick(c.variants);
            let colour = rng.pick(COLOURS);
            let title = format!("{brand} {series} {model} {noun} {variant} {colour}");
            let (lo, hi) = c.price;
            // Prices end in 9 rupees, as shops price them.
            let rupees = lo + (rng.below((hi - lo) as usize) as u32 / 10) * 10;
            let rupees = rupees - rupees % 10 + 9;
            Product {
                title,
                brand,
                category: c.name,
                price: rupees * 100,
                rating: 10 + rng.below(41) as u8,
            }
        })
        .collect()
}
