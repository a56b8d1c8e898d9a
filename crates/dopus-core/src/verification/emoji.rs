//! The 64 SAS emoji with their English names, in the order of the Matrix specification's
//! table (so users of other Matrix-style clients recognise them; the order is the protocol).

/// One SAS emoji.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Emoji {
    /// The emoji itself.
    pub symbol: &'static str,
    /// Its English name, for screen readers and for comparing aloud.
    pub name: &'static str,
}

const fn e(symbol: &'static str, name: &'static str) -> Emoji {
    Emoji { symbol, name }
}

/// The table; a SAS index (0–63) picks one entry.
pub const EMOJI: [Emoji; 64] = [
    e("🐶", "Dog"),
    e("🐱", "Cat"),
    e("🦁", "Lion"),
    e("🐎", "Horse"),
    e("🦄", "Unicorn"),
    e("🐷", "Pig"),
    e("🐘", "Elephant"),
    e("🐰", "Rabbit"),
    e("🐼", "Panda"),
    e("🐓", "Rooster"),
    e("🐧", "Penguin"),
    e("🐢", "Turtle"),
    e("🐟", "Fish"),
    e("🐙", "Octopus"),
    e("🦋", "Butterfly"),
    e("🌷", "Flower"),
    e("🌳", "Tree"),
    e("🌵", "Cactus"),
    e("🍄", "Mushroom"),
    e("🌏", "Globe"),
    e("🌙", "Moon"),
    e("☁️", "Cloud"),
    e("🔥", "Fire"),
    e("🍌", "Banana"),
    e("🍎", "Apple"),
    e("🍓", "Strawberry"),
    e("🌽", "Corn"),
    e("🍕", "Pizza"),
    e("🎂", "Cake"),
    e("❤️", "Heart"),
    e("😀", "Smiley"),
    e("🤖", "Robot"),
    e("🎩", "Hat"),
    e("👓", "Glasses"),
    e("🔧", "Spanner"),
    e("🎅", "Santa"),
    e("👍", "Thumbs Up"),
    e("☂️", "Umbrella"),
    e("⌛", "Hourglass"),
    e("⏰", "Clock"),
    e("🎁", "Gift"),
    e("💡", "Light Bulb"),
    e("📕", "Book"),
    e("✏️", "Pencil"),
    e("📎", "Paperclip"),
    e("✂️", "Scissors"),
    e("🔒", "Lock"),
    e("🔑", "Key"),
    e("🔨", "Hammer"),
    e("☎️", "Telephone"),
    e("🏁", "Flag"),
    e("🚂", "Train"),
    e("🚲", "Bicycle"),
    e("✈️", "Aeroplane"),
    e("🚀", "Rocket"),
    e("🏆", "Trophy"),
    e("⚽", "Ball"),
    e("🎸", "Guitar"),
    e("🎺", "Trumpet"),
    e("🔔", "Bell"),
    e("⚓", "Anchor"),
    e("🎧", "Headphones"),
    e("📁", "Folder"),
    e("📌", "Pin"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_table_has_64_distinct_entries() {
        let symbols: HashSet<_> = EMOJI.iter().map(|e| e.symbol).collect();
        let names: HashSet<_> = EMOJI.iter().map(|e| e.name).collect();
        assert_eq!(symbols.len(), 64);
        assert_eq!(names.len(), 64);
        assert_eq!(EMOJI[0].name, "Dog");
        assert_eq!(EMOJI[34].name, "Spanner");
        assert_eq!(EMOJI[63].name, "Pin");
    }
}
