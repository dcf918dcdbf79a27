"""The product taxonomy: top-level categories, their subcategories, prices, brands and words."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

PATH_SEPARATOR = ">"


@dataclass(frozen=True)
class Subcategory:
    id: str
    name_zh: str

    @property
    def name_en(self) -> str:
        return self.id.replace("_", " ")


@dataclass(frozen=True)
class Category:
    """One top-level category and what the sample-data generator needs to fill it.

    Prices are lognormal: half the items cost less than `price_median` CNY, and
    `price_sigma` is the spread of log(price), so 0.5 is narrow and 1.0 is wide.
    """

    id: str
    name_zh: str
    subcategories: tuple[Subcategory, ...]
    price_median: float
    price_sigma: float
    brands: tuple[str, ...]
    title_words_zh: tuple[str, ...]
    title_words_en: tuple[str, ...]
    keywords_zh: tuple[str, ...]
    keywords_en: tuple[str, ...]
    # Relative share of shoppers who name this category among their interests.
    popularity: float

    @property
    def name_en(self) -> str:
        return self.id.replace("_", " ")

    @property
    def subcategory_ids(self) -> tuple[str, ...]:
        return tuple(sub.id for sub in self.subcategories)


def _subs(*pairs: tuple[str, str]) -> tuple[Subcategory, ...]:
    return tuple(Subcategory(sub_id, name_zh) for sub_id, name_zh in pairs)


_CATEGORY_LIST: tuple[Category, ...] = (
    Category(
        id="electronics",
        name_zh="数码电子",
        subcategories=_subs(
            ("headphones", "耳机"),
            ("cameras", "相机"),
            ("smart_watches", "智能手表"),
            ("speakers", "音箱"),
            ("power_banks", "充电宝"),
        ),
        price_median=399.0,
        price_sigma=0.9,
        brands=("Sony", "Xiaomi", "Huawei", "Anker", "JBL", "Canon"),
        title_words_zh=("无线", "降噪", "蓝牙", "高清", "便携", "旗舰"),
        title_words_en=("wireless", "noise-cancelling", "bluetooth", "HD", "portable", "flagship"),
        keywords_zh=("蓝牙耳机", "降噪耳机", "智能手表", "充电宝", "微单相机"),
        keywords_en=("bluetooth headphones", "smart watch", "power bank", "camera", "speaker"),
        popularity=1.4,
    ),
    Category(
        id="phones",
        name_zh="手机通讯",
        subcategories=_subs(
            ("smartphones", "智能手机"),
            ("phone_cases", "手机壳"),
            ("chargers", "充电器"),
            ("screen_protectors", "贴膜"),
        ),
        price_median=899.0,
        price_sigma=1.1,
        brands=("Apple", "Huawei", "Xiaomi", "OPPO", "vivo", "Honor"),
        title_words_zh=("5G", "快充", "超薄", "防摔", "全网通", "曲面屏"),
        title_words_en=("5G", "fast-charge", "slim", "shockproof", "unlocked", "curved"),
        keywords_zh=("5G手机", "手机壳", "快充充电器", "钢化膜", "拍照手机"),
        keywords_en=("5g phone", "phone case", "fast charger", "screen protector", "iphone"),
        popularity=1.3,
    ),
    Category(
        id="computers",
        name_zh="电脑办公",
        subcategories=_subs(
            ("laptops", "笔记本电脑"),
            ("monitors", "显示器"),
            ("keyboards", "键盘"),
            ("mice", "鼠标"),
            ("storage", "存储设备"),
        ),
        price_median=599.0,
        price_sigma=1.2,
        brands=("Lenovo", "Dell", "HP", "ASUS", "Logitech", "Samsung"),
        title_words_zh=("轻薄", "游戏", "机械", "高刷", "商务", "静音"),
        title_words_en=("ultralight", "gaming", "mechanical", "high-refresh", "business", "silent"),
        keywords_zh=("笔记本电脑", "机械键盘", "游戏鼠标", "4K显示器", "移动硬盘"),
        keywords_en=("laptop", "mechanical keyboard", "gaming mouse", "4k monitor", "ssd"),
        popularity=1.0,
    ),
    Category(
        id="home_appliances",
        name_zh="家用电器",
        subcategories=_subs(
            ("kitchen_appliances", "厨房电器"),
            ("vacuum_cleaners", "吸尘器"),
            ("air_conditioners", "空调"),
            ("washing_machines", "洗衣机"),
        ),
        price_median=899.0,
        price_sigma=0.9,
        brands=("Midea", "Haier", "Gree", "Dyson", "Philips", "Supor"),
        title_words_zh=("变频", "节能", "智能", "大容量", "静音", "一级能效"),
        title_words_en=("inverter", "energy-saving", "smart", "large", "quiet", "efficient"),
        keywords_zh=("空气炸锅", "扫地机器人", "变频空调", "滚筒洗衣机", "电饭煲"),
        keywords_en=("air fryer", "robot vacuum", "air conditioner", "washing machine", "rice cooker"),
        popularity=1.0,
    ),
    Category(
        id="home_living",
        name_zh="家居生活",
        subcategories=_subs(
            ("bedding", "床上用品"),
            ("kitchenware", "厨具"),
            ("storage_organizers", "收纳整理"),
            ("home_decor", "家居装饰"),
        ),
        price_median=69.0,
        price_sigma=0.8,
        brands=("MUJI", "IKEA", "Lock&Lock", "Fuanna", "Zwilling", "Deli Home"),
        title_words_zh=("纯棉", "北欧风", "加厚", "简约", "耐用", "家用"),
        title_words_en=("cotton", "nordic", "thick", "minimal", "durable", "household"),
        keywords_zh=("四件套", "收纳盒", "不粘锅", "装饰画", "保温杯"),
        keywords_en=("bedding set", "storage box", "nonstick pan", "wall art", "thermos"),
        popularity=1.1,
    ),
    Category(
        id="furniture",
        name_zh="家具",
        subcategories=_subs(
            ("sofas", "沙发"),
            ("beds", "床"),
            ("tables", "桌子"),
            ("chairs", "椅子"),
        ),
        price_median=1199.0,
        price_sigma=0.8,
        brands=("IKEA", "Kuka", "Quanyou", "Lin's Wood", "Sleemon"),
        title_words_zh=("实木", "布艺", "可折叠", "人体工学", "现代", "小户型"),
        title_words_en=("solid-wood", "fabric", "foldable", "ergonomic", "modern", "compact"),
        keywords_zh=("布艺沙发", "实木床", "电脑椅", "餐桌", "人体工学椅"),
        keywords_en=("sofa", "wooden bed", "office chair", "dining table", "ergonomic chair"),
        popularity=0.6,
    ),
    Category(
        id="apparel_women",
        name_zh="女装",
        subcategories=_subs(
            ("dresses", "连衣裙"),
            ("tops", "上衣"),
            ("coats", "外套"),
            ("skirts", "半身裙"),
            ("knitwear", "针织衫"),
        ),
        price_median=159.0,
        price_sigma=0.7,
        brands=("UR", "ONLY", "Peacebird", "ZARA", "Uniqlo", "Mo&Co"),
        title_words_zh=("修身", "法式", "碎花", "宽松", "新款", "气质"),
        title_words_en=("slim-fit", "french", "floral", "loose", "new", "elegant"),
        keywords_zh=("连衣裙", "羊毛大衣", "针织开衫", "碎花裙", "白衬衫"),
        keywords_en=("dress", "wool coat", "cardigan", "floral skirt", "white shirt"),
        popularity=1.4,
    ),
    Category(
        id="apparel_men",
        name_zh="男装",
        subcategories=_subs(
            ("t_shirts", "T恤"),
            ("shirts", "衬衫"),
            ("jackets", "夹克"),
            ("trousers", "裤子"),
        ),
        price_median=139.0,
        price_sigma=0.7,
        brands=("Jack&Jones", "HLA", "Uniqlo", "Semir", "Lining", "GXG"),
        title_words_zh=("纯棉", "商务", "休闲", "修身", "百搭", "加绒"),
        title_words_en=("cotton", "business", "casual", "slim", "classic", "fleece-lined"),
        keywords_zh=("男士T恤", "商务衬衫", "休闲裤", "夹克外套", "羽绒服"),
        keywords_en=("mens t-shirt", "dress shirt", "chinos", "jacket", "down jacket"),
        popularity=1.1,
    ),
    Category(
        id="shoes_bags",
        name_zh="鞋靴箱包",
        subcategories=_subs(
            ("sneakers", "运动鞋"),
            ("boots", "靴子"),
            ("handbags", "手提包"),
            ("backpacks", "双肩包"),
            ("luggage", "行李箱"),
        ),
        price_median=299.0,
        price_sigma=0.8,
        brands=("Nike", "Adidas", "Belle", "Coach", "Samsonite", "Anta"),
        title_words_zh=("真皮", "透气", "轻便", "大容量", "防水", "复古"),
        title_words_en=("leather", "breathable", "lightweight", "roomy", "waterproof", "retro"),
        keywords_zh=("跑步鞋", "马丁靴", "女士手提包", "双肩包", "20寸行李箱"),
        keywords_en=("running shoes", "boots", "handbag", "backpack", "carry-on luggage"),
        popularity=1.2,
    ),
    Category(
        id="beauty",
        name_zh="美妆护肤",
        subcategories=_subs(
            ("skincare", "护肤"),
            ("makeup", "彩妆"),
            ("fragrance", "香水"),
            ("masks", "面膜"),
        ),
        price_median=199.0,
        price_sigma=0.8,
        brands=("L'Oreal", "Estee Lauder", "Lancome", "Perfect Diary", "Proya", "Shiseido"),
        title_words_zh=("保湿", "美白", "抗老", "持久", "温和", "补水"),
        title_words_en=("hydrating", "brightening", "anti-aging", "long-lasting", "gentle", "moisturizing"),
        keywords_zh=("精华液", "口红", "面膜", "香水", "防晒霜"),
        keywords_en=("serum", "lipstick", "sheet mask", "perfume", "sunscreen"),
        popularity=1.3,
    ),
    Category(
        id="personal_care",
        name_zh="个人护理",
        subcategories=_subs(
            ("hair_care", "洗护发"),
            ("oral_care", "口腔护理"),
            ("body_care", "身体护理"),
            ("shavers", "剃须刀"),
        ),
        price_median=49.0,
        price_sigma=0.8,
        brands=("Head&Shoulders", "Colgate", "Oral-B", "Braun", "Safeguard", "Dove"),
        title_words_zh=("去屑", "电动", "清爽", "温和", "家庭装", "便携"),
        title_words_en=("anti-dandruff", "electric", "fresh", "mild", "family-size", "travel"),
        keywords_zh=("洗发水", "电动牙刷", "沐浴露", "剃须刀", "护发素"),
        keywords_en=("shampoo", "electric toothbrush", "body wash", "shaver", "conditioner"),
        popularity=0.9,
    ),
    Category(
        id="baby_kids",
        name_zh="母婴",
        subcategories=_subs(
            ("diapers", "纸尿裤"),
            ("formula", "奶粉"),
            ("strollers", "婴儿车"),
            ("kids_clothing", "童装"),
        ),
        price_median=159.0,
        price_sigma=0.8,
        brands=("Pampers", "Huggies", "Feihe", "a2", "Goodbaby", "Balabala"),
        title_words_zh=("婴儿", "超薄", "有机", "轻便", "安全", "纯棉"),
        title_words_en=("baby", "ultra-thin", "organic", "light", "safe", "cotton"),
        keywords_zh=("纸尿裤", "婴儿奶粉", "婴儿推车", "儿童外套", "宝宝湿巾"),
        keywords_en=("diapers", "infant formula", "stroller", "kids jacket", "baby wipes"),
        popularity=0.8,
    ),
    Category(
        id="toys_games",
        name_zh="玩具游戏",
        subcategories=_subs(
            ("building_blocks", "积木"),
            ("dolls", "娃娃"),
            ("board_games", "桌游"),
            ("video_games", "电子游戏"),
        ),
        price_median=129.0,
        price_sigma=0.9,
        brands=("LEGO", "Bandai", "Nintendo", "Pop Mart", "Hasbro", "Mattel"),
        title_words_zh=("益智", "收藏", "限定", "拼装", "亲子", "盲盒"),
        title_words_en=("educational", "collectible", "limited", "buildable", "family", "blind-box"),
        keywords_zh=("乐高", "盲盒", "桌游", "Switch游戏", "拼图"),
        keywords_en=("lego", "blind box", "board game", "switch game", "puzzle"),
        popularity=0.8,
    ),
    Category(
        id="sports_outdoors",
        name_zh="运动户外",
        subcategories=_subs(
            ("fitness", "健身器材"),
            ("camping", "露营装备"),
            ("cycling", "骑行"),
            ("sportswear", "运动服"),
            ("yoga", "瑜伽"),
        ),
        price_median=199.0,
        price_sigma=0.9,
        brands=("Decathlon", "Li-Ning", "Anta", "The North Face", "Lululemon", "Giant"),
        title_words_zh=("专业", "速干", "防风", "折叠", "加厚", "户外"),
        title_words_en=("pro", "quick-dry", "windproof", "folding", "padded", "outdoor"),
        keywords_zh=("瑜伽垫", "帐篷", "哑铃", "山地车", "冲锋衣"),
        keywords_en=("yoga mat", "tent", "dumbbells", "mountain bike", "rain jacket"),
        popularity=1.0,
    ),
    Category(
        id="books_media",
        name_zh="图书音像",
        subcategories=_subs(
            ("fiction", "小说"),
            ("education", "教育"),
            ("childrens_books", "童书"),
            ("comics", "漫画"),
        ),
        price_median=39.0,
        price_sigma=0.6,
        brands=("CITIC Press", "People's Literature", "Penguin", "Xinhua", "Dangdang"),
        title_words_zh=("精装", "全集", "畅销", "新版", "典藏", "插图"),
        title_words_en=("hardcover", "complete", "bestseller", "new-edition", "collector's", "illustrated"),
        keywords_zh=("小说", "考研资料", "绘本", "漫画", "历史书"),
        keywords_en=("novel", "exam prep", "picture book", "manga", "history book"),
        popularity=0.7,
    ),
    Category(
        id="food_beverage",
        name_zh="食品饮料",
        subcategories=_subs(
            ("snacks", "零食"),
            ("coffee_tea", "咖啡茶叶"),
            ("drinks", "饮料"),
            ("wine_spirits", "酒类"),
        ),
        price_median=49.0,
        price_sigma=0.8,
        brands=("Three Squirrels", "Nestle", "Moutai", "Nongfu Spring", "Starbucks", "Oreo"),
        title_words_zh=("进口", "礼盒", "整箱", "低糖", "原味", "特级"),
        title_words_en=("imported", "gift-box", "case", "low-sugar", "original", "premium-grade"),
        keywords_zh=("坚果", "咖啡豆", "绿茶", "矿泉水", "红酒"),
        keywords_en=("nuts", "coffee beans", "green tea", "mineral water", "red wine"),
        popularity=1.2,
    ),
    Category(
        id="fresh_grocery",
        name_zh="生鲜",
        subcategories=_subs(
            ("fruits", "水果"),
            ("vegetables", "蔬菜"),
            ("meat", "肉类"),
            ("seafood", "海鲜"),
        ),
        price_median=59.0,
        price_sigma=0.6,
        brands=("Hema", "Dingdong", "Pagoda", "Joyvio", "Zespri"),
        title_words_zh=("新鲜", "产地直发", "有机", "冷链", "当季", "精选"),
        title_words_en=("fresh", "farm-direct", "organic", "cold-chain", "seasonal", "select"),
        keywords_zh=("车厘子", "牛排", "大闸蟹", "有机蔬菜", "猕猴桃"),
        keywords_en=("cherries", "steak", "hairy crab", "organic vegetables", "kiwi"),
        popularity=0.9,
    ),
    Category(
        id="health",
        name_zh="医药保健",
        subcategories=_subs(
            ("vitamins", "维生素"),
            ("medical_devices", "医疗器械"),
            ("supplements", "营养补充"),
        ),
        price_median=129.0,
        price_sigma=0.8,
        brands=("By-health", "Swisse", "Omron", "Yuwell", "Blackmores"),
        title_words_zh=("高含量", "家用", "精准", "复合", "孕妇可用", "便携"),
        title_words_en=("high-dose", "home", "accurate", "multi", "prenatal", "portable"),
        keywords_zh=("维生素C", "血压计", "鱼油", "蛋白粉", "体温计"),
        keywords_en=("vitamin c", "blood pressure monitor", "fish oil", "protein powder", "thermometer"),
        popularity=0.7,
    ),
    Category(
        id="pets",
        name_zh="宠物用品",
        subcategories=_subs(
            ("pet_food", "宠物食品"),
            ("pet_toys", "宠物玩具"),
            ("pet_care", "宠物护理"),
        ),
        price_median=89.0,
        price_sigma=0.8,
        brands=("Royal Canin", "Pedigree", "Whiskas", "Petkit", "Orijen"),
        title_words_zh=("全价", "幼猫", "成犬", "天然", "自动", "除臭"),
        title_words_en=("complete", "kitten", "adult-dog", "natural", "automatic", "odor-control"),
        keywords_zh=("猫粮", "狗粮", "猫砂", "逗猫棒", "宠物饮水机"),
        keywords_en=("cat food", "dog food", "cat litter", "cat toy", "pet fountain"),
        popularity=0.7,
    ),
    Category(
        id="automotive",
        name_zh="汽车用品",
        subcategories=_subs(
            ("car_electronics", "车载电器"),
            ("car_care", "汽车养护"),
            ("car_accessories", "汽车配件"),
        ),
        price_median=149.0,
        price_sigma=1.0,
        brands=("70mai", "Michelin", "Castrol", "Bosch", "3M"),
        title_words_zh=("车载", "高清", "通用", "全合成", "防滑", "快充"),
        title_words_en=("in-car", "HD", "universal", "synthetic", "anti-slip", "fast-charge"),
        keywords_zh=("行车记录仪", "机油", "车载充电器", "洗车液", "脚垫"),
        keywords_en=("dash cam", "motor oil", "car charger", "car wash", "floor mats"),
        popularity=0.5,
    ),
    Category(
        id="jewelry_watches",
        name_zh="珠宝钟表",
        subcategories=_subs(
            ("watches", "手表"),
            ("necklaces", "项链"),
            ("rings", "戒指"),
            ("bracelets", "手链"),
        ),
        price_median=899.0,
        price_sigma=1.1,
        brands=("Chow Tai Fook", "Swarovski", "Casio", "Tissot", "Pandora", "Lao Feng Xiang"),
        title_words_zh=("黄金", "纯银", "机械", "石英", "情侣", "镶钻"),
        title_words_en=("gold", "silver", "automatic", "quartz", "couple", "diamond"),
        keywords_zh=("金项链", "机械表", "银手链", "钻戒", "情侣对戒"),
        keywords_en=("gold necklace", "automatic watch", "silver bracelet", "diamond ring", "couple rings"),
        popularity=0.5,
    ),
    Category(
        id="office_stationery",
        name_zh="文具办公",
        subcategories=_subs(
            ("pens", "笔"),
            ("notebooks", "笔记本"),
            ("printers", "打印机"),
            ("desk_supplies", "桌面用品"),
        ),
        price_median=29.0,
        price_sigma=1.2,
        brands=("Deli", "M&G", "Pilot", "Muji", "Canon", "Kokuyo"),
        title_words_zh=("中性", "加厚", "无线", "学生", "商务", "速干"),
        title_words_en=("gel", "thick", "wireless", "student", "business", "quick-dry"),
        keywords_zh=("中性笔", "笔记本", "打印机", "文件夹", "便利贴"),
        keywords_en=("gel pen", "notebook", "printer", "file folder", "sticky notes"),
        popularity=0.6,
    ),
)

# The order is part of the contract: it fixes the label columns of the interest model.
TOP_LEVEL: tuple[str, ...] = tuple(category.id for category in _CATEGORY_LIST)

CATEGORIES: Mapping[str, Category] = MappingProxyType(
    {category.id: category for category in _CATEGORY_LIST}
)

ALL_PATHS: tuple[str, ...] = tuple(
    f"{category.id}{PATH_SEPARATOR}{sub.id}"
    for category in _CATEGORY_LIST
    for sub in category.subcategories
)

_KNOWN_PATHS = frozenset(ALL_PATHS)


def category_path(top: str, sub: str) -> str:
    """The `top>sub` path that items carry; raises ValueError for a pair not in the taxonomy."""
    category = CATEGORIES.get(top)
    if category is None:
        raise ValueError(f"unknown top-level category {top!r}; known: {', '.join(TOP_LEVEL)}")
    if sub not in category.subcategory_ids:
        raise ValueError(
            f"unknown subcategory {sub!r} of {top!r}; known: {', '.join(category.subcategory_ids)}"
        )
    return f"{top}{PATH_SEPARATOR}{sub}"


def top_level_of(path: str | None) -> str | None:
    """The top-level id of `top` or `top>sub`; None when the path is not in the taxonomy."""
    if not path:
        return None
    path = path.strip()
    if path in CATEGORIES:
        return path
    if path in _KNOWN_PATHS:
        return path.split(PATH_SEPARATOR, 1)[0]
    return None
